//! The guide: one chapter per topic, with examples that compile (and most
//! of them run) as doctests.
//!
//! Start with [steps and rollbacks](steps); then, as you need them:
//!
//! | chapter | what it covers |
//! |---|---|
//! | [`steps`] | what is rolled back and when, the ways to write a step and its rollback, error types, the summary |
//! | [`retries`] | retry policies, per-attempt timeouts, a transaction's deadline and cancel signal |
//! | [`groups`] | parallel groups: steps at the same time inside one transaction |
//! | [`scopes`] | nested transactions on the same records (savepoints) |
//! | [`durability`] | the journal: surviving a crash or a power cut, recovery, owed rollbacks, idempotency keys |
//! | [`processes`] | several processes on one SQLite file, many machines on one Postgres database |
//! | [`observability`] | logs, `tracing` spans, JSON, metrics, hooks |
//! | [`microcontrollers`] | `no_std` without an allocator, steps as data, the firmware profiles and footprint, the journal on flash |
//! | [`runtimes`] | tokio, smol, embassy, virtual time; libraries that do not choose a runtime; `Send` |
//! | [`testing`] | virtual time and typed errors in tests |
//! | [`troubleshooting`] | what the compiler says in the known traps, and the fixes |
//!
//! What the library promises when things go wrong, with the tests that
//! hold it to each promise, is in
//! [GUARANTEES.md](https://github.com/transaction-manager/transaction-manager/blob/main/GUARANTEES.md).
//!
//! # Examples
//!
//! The repository's `examples/` directory holds programs to run:
//!
//! | command | shows |
//! |---|---|
//! | `cargo run --example provision` | a user, then a VM using the user's id; the summary |
//! | `cargo run --example payment_failure` | a payment over the limit fails; the user is rolled back |
//! | `cargo run --example rollback_from_output` | a rollback releasing the IP address its step returned |
//! | `cargo run --example parallel` | a VM and an IP address reserved at the same time; the address fails, the VM is rolled back |
//! | `cargo run --example durable --features sqlite` | a process killed mid-transaction; on restart, recovery rolls back what it owed |
//! | `cargo run --example hooks` | every hook of a failing transaction, with retries |
//! | `cargo run --example logging` | the library's log messages (retry, rollback) via `env_logger` |
//! | `cargo run --example provision_smol --features smol` | `provision` on smol |
//! | `cargo run --example tracing --features tracing` | the `tracing` span tree of a failing transaction |
//! | `cargo run --example metrics --features metrics` | the `Metrics` hook, exported in the Prometheus format |
//! | `cargo run --manifest-path examples/embassy-host/Cargo.toml` | `provision` on embassy (host) |
//!
//! The guide's chapters are modules without items: this page and its
//! children are documentation only.

pub mod steps {
    #![doc = include_str!("steps.md")]
}
pub mod retries {
    #![doc = include_str!("retries.md")]
}
pub mod groups {
    #![doc = include_str!("groups.md")]
}
pub mod scopes {
    #![doc = include_str!("scopes.md")]
}
pub mod durability {
    #![doc = include_str!("durability.md")]
}
pub mod processes {
    #![doc = include_str!("processes.md")]
}
pub mod observability {
    #![doc = include_str!("observability.md")]
}
pub mod microcontrollers {
    #![doc = include_str!("microcontrollers.md")]
}
pub mod runtimes {
    #![doc = include_str!("runtimes.md")]
}
pub mod testing {
    #![doc = include_str!("testing.md")]
}
pub mod troubleshooting {
    #![doc = include_str!("troubleshooting.md")]
}
