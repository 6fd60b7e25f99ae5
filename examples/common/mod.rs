//! A pretend cloud provider shared by the examples: in-memory users, VMs,
//! IP addresses and payments, with a little latency, optional injected
//! failures, and a line printed for every call so each example reads as a
//! story.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use transaction_manager::Clock;

pub mod provision;

/// What the pretend API can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudError {
    /// The request was refused; retrying may help.
    Unavailable(&'static str),
    /// A payment above the account's limit.
    LimitExceeded { amount_cents: u64, limit_cents: u64 },
    /// The thing to delete does not exist.
    NotFound(String),
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudError::Unavailable(what) => write!(f, "{what} is temporarily unavailable"),
            CloudError::LimitExceeded { amount_cents, limit_cents } => write!(
                f,
                "payment of ${}.{:02} exceeds the limit of ${}.{:02}",
                amount_cents / 100,
                amount_cents % 100,
                limit_cents / 100,
                limit_cents % 100
            ),
            CloudError::NotFound(what) => write!(f, "{what} not found"),
        }
    }
}

impl std::error::Error for CloudError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: String,
    pub owner: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ip(pub [u8; 4]);

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

#[derive(Default)]
struct State {
    next_user: u32,
    next_vm: u32,
    next_ip: u8,
    users: BTreeMap<u32, String>,
    vms: BTreeMap<String, u32>,
    ips: BTreeSet<Ip>,
    failures: BTreeMap<&'static str, u32>,
}

/// The pretend provider. Cheap to share behind an `Arc`. Its latency is a
/// sleep on the runtime's own clock, so it runs on any runtime.
pub struct FakeCloud<C> {
    clock: C,
    state: Mutex<State>,
    latency: Duration,
    payment_limit_cents: u64,
}

impl<C: Clock> FakeCloud<C> {
    pub fn new(clock: C) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
            latency: Duration::from_millis(20),
            payment_limit_cents: 10_000,
        }
    }

    /// Makes the next `times` calls of `operation` fail with `Unavailable`.
    pub fn fail_next(&self, operation: &'static str, times: u32) {
        self.state.lock().unwrap().failures.insert(operation, times);
    }

    async fn call(&self, operation: &'static str) -> Result<(), CloudError> {
        self.clock.sleep(self.latency).await;
        let mut state = self.state.lock().unwrap();
        match state.failures.get_mut(operation) {
            Some(n) if *n > 0 => {
                *n -= 1;
                println!("    [cloud] {operation}: 503, try again later");
                Err(CloudError::Unavailable(operation))
            }
            _ => Ok(()),
        }
    }

    pub async fn create_user(&self, name: &str) -> Result<User, CloudError> {
        self.call("create_user").await?;
        let mut s = self.state.lock().unwrap();
        s.next_user += 1;
        let id = s.next_user;
        s.users.insert(id, name.to_string());
        println!("    [cloud] created user {id} ({name})");
        Ok(User { id, name: name.to_string() })
    }

    pub async fn delete_user(&self, id: u32) -> Result<(), CloudError> {
        self.call("delete_user").await?;
        let mut s = self.state.lock().unwrap();
        match s.users.remove(&id) {
            Some(name) => {
                println!("    [cloud] deleted user {id} ({name})");
                Ok(())
            }
            None => Err(CloudError::NotFound(format!("user {id}"))),
        }
    }

    pub async fn create_vm(&self, owner: u32) -> Result<Vm, CloudError> {
        self.call("create_vm").await?;
        let mut s = self.state.lock().unwrap();
        s.next_vm += 1;
        let id = format!("vm-{:03}", s.next_vm);
        s.vms.insert(id.clone(), owner);
        println!("    [cloud] created {id} for user {owner}");
        Ok(Vm { id, owner })
    }

    pub async fn delete_vm(&self, id: &str) -> Result<(), CloudError> {
        self.call("delete_vm").await?;
        let mut s = self.state.lock().unwrap();
        match s.vms.remove(id) {
            Some(_) => {
                println!("    [cloud] deleted {id}");
                Ok(())
            }
            None => Err(CloudError::NotFound(id.to_string())),
        }
    }

    pub async fn assign_ip(&self, vm: &str) -> Result<Ip, CloudError> {
        self.call("assign_ip").await?;
        let mut s = self.state.lock().unwrap();
        s.next_ip += 1;
        let ip = Ip([10, 0, 0, s.next_ip]);
        s.ips.insert(ip);
        println!("    [cloud] assigned {ip} to {vm}");
        Ok(ip)
    }

    /// Reserves an address not yet attached to a VM.
    pub async fn reserve_ip(&self) -> Result<Ip, CloudError> {
        self.call("reserve_ip").await?;
        let mut s = self.state.lock().unwrap();
        s.next_ip += 1;
        let ip = Ip([10, 0, 0, s.next_ip]);
        s.ips.insert(ip);
        println!("    [cloud] reserved {ip}");
        Ok(ip)
    }

    pub async fn release_ip(&self, ip: Ip) -> Result<(), CloudError> {
        self.call("release_ip").await?;
        let mut s = self.state.lock().unwrap();
        if s.ips.remove(&ip) {
            println!("    [cloud] released {ip}");
            Ok(())
        } else {
            Err(CloudError::NotFound(format!("address {ip}")))
        }
    }

    pub async fn open_port(&self, ip: Ip, port: u16) -> Result<(), CloudError> {
        self.call("open_port").await?;
        println!("    [cloud] opened port {port} on {ip}");
        Ok(())
    }

    pub async fn charge(&self, user: u32, amount_cents: u64) -> Result<String, CloudError> {
        self.call("charge").await?;
        if amount_cents > self.payment_limit_cents {
            println!("    [cloud] payment of {amount_cents} cents for user {user} declined");
            return Err(CloudError::LimitExceeded { amount_cents, limit_cents: self.payment_limit_cents });
        }
        println!("    [cloud] charged user {user} {amount_cents} cents");
        Ok(format!("pay-{user}-{amount_cents}"))
    }

    /// What is left in the cloud: users, VMs and addresses.
    pub fn inventory(&self) -> String {
        let s = self.state.lock().unwrap();
        let ips: Vec<String> = s.ips.iter().map(Ip::to_string).collect();
        format!(
            "users {:?}, vms {:?}, addresses {:?}",
            s.users.values().collect::<Vec<_>>(),
            s.vms.keys().collect::<Vec<_>>(),
            ips
        )
    }
}
