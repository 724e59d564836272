//! A fixed-window attempt counter per client address, for login and register.

use bakend_core::sync;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    attempts: u32,
    window: Duration,
    slots: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const MAX_TRACKED: usize = 100_000;

impl RateLimiter {
    /// `attempts == 0` turns limiting off.
    pub fn new(attempts: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            attempts,
            window,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `ip`. `Err(seconds)` when it is over the limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.attempts == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut slots = sync::lock(&self.slots);
        if slots.len() >= MAX_TRACKED {
            let window = self.window;
            slots.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let slot = slots.entry(ip).or_insert((now, 0));
        if now.duration_since(slot.0) >= self.window {
            *slot = (now, 0);
        }
        if slot.1 >= self.attempts {
            let left = self.window.saturating_sub(now.duration_since(slot.0));
            return Err(left.as_secs().max(1));
        }
        slot.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_recovers() {
        let rl = RateLimiter::new(2, Duration::from_millis(50));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(rl.check(a).is_ok());
        assert!(rl.check(a).is_ok());
        assert!(rl.check(a).is_err());
        assert!(rl.check(b).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(rl.check(a).is_ok());
        assert!(RateLimiter::new(0, Duration::from_secs(1)).check(a).is_ok());
    }
}
