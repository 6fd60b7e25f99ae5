//! The `serde` feature: the JSON shape of a summary and of a transaction
//! error is pinned, field by field.

use std::time::Duration;

use transaction_manager::*;

use transaction_manager::journal::{IdempotencyKey, Postcard, UndoCodec};

#[test]
fn summary_and_error_json_shape() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_timeout(Duration::from_secs(2));
    let err = clock
        .block_on(manager.transaction("provision").with_id(TransactionId::new(3)).local().run(async |tx| {
            tx.step("create_user")
                .execute(|| async {
                    clock.sleep(Duration::from_millis(250)).await;
                    Ok::<_, &str>(42)
                })
                .rollback(|_| async { Err::<(), _>("locked") })
                .await?;
            tx.step("charge").run(|| async { Err::<(), _>("card declined") }).await?;
            Ok::<_, StepError<&str>>(())
        }))
        .unwrap_err();

    let json = serde_json::to_value(&err).unwrap();
    let expected = serde_json::json!({
        "cause": "step `charge` failed: card declined",
        "rollback_state": "partial",
        "rollback_failures": [
            { "step": "create_user", "index": 0, "kind": "failed", "error": "rollback of step `create_user` failed: locked" }
        ],
        "summary": {
            "transaction_id": "tx-3",
            "operation_name": "provision",
            "total_steps": 2,
            "completed_steps": 0,
            "failed_steps": 1,
            "rolled_back_steps": 0,
            "rollback_errors": 1,
            "rollback_skipped_steps": 0,
            "started_at": 0.0,
            "completed_at": 0.25,
            "duration": 0.25,
            "steps": [
                {
                    "name": "create_user", "index": 0, "status": "rollback_failed",
                    "started_at": 0.0, "completed_at": 0.25, "duration": 0.25,
                    "attempts": 1, "error": null, "timeout": 2.0, "has_rollback": true,
                    "rollback_attempts": 1, "rollback_started_at": 0.25, "rollback_completed_at": 0.25,
                    "rollback_error": "locked", "scope": null
                },
                {
                    "name": "charge", "index": 1, "status": "failed",
                    "started_at": 0.25, "completed_at": 0.25, "duration": 0.0,
                    "attempts": 1, "error": "card declined", "timeout": 2.0, "has_rollback": false,
                    "rollback_attempts": 0, "rollback_started_at": null, "rollback_completed_at": null,
                    "rollback_error": null, "scope": null
                }
            ]
        }
    });
    assert_eq!(json, expected, "{}", serde_json::to_string_pretty(&json).unwrap());

    let step_error = serde_json::to_value(err.cause()).unwrap();
    assert_eq!(
        step_error,
        serde_json::json!({ "step": "charge", "index": 1, "kind": "failed", "error": "step `charge` failed: card declined" })
    );
}

#[test]
fn idempotency_keys_serialise_with_the_serde_feature() {
    let key = IdempotencyKey::new(0xab, TransactionId::new(7), 2);
    let json = serde_json::to_string(&key).unwrap();
    assert_eq!(json, r#"{"origin":171,"transaction":7,"step":2}"#);
    assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), key);
    let mut buf = [0u8; 32];
    let len = UndoCodec::<IdempotencyKey>::encode(&Postcard::<1>, &key, &mut buf).unwrap();
    assert_eq!(UndoCodec::<IdempotencyKey>::decode(&Postcard::<1>, 1, &buf[..len]).unwrap(), key);
    // A key kept in a JSON undo record written before keys had an origin
    // reads back with origin 0, the key its step saw then.
    let old = serde_json::from_str::<IdempotencyKey>(r#"{"transaction":7,"step":2}"#).unwrap();
    assert_eq!(old, IdempotencyKey::new(0, TransactionId::new(7), 2));
}
