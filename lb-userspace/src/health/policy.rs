//! When a check runs next and when its verdict flips: keepalived's retry / rise / alpha / warmup
//! semantics as a pure state machine. The clock and the random source are passed in, so every
//! timing rule is tested without sleeping.
//!
//! - An attempt that fails while the check is up is retried up to `retry` more times, spaced
//!   `delay_before_retry`; the last failure takes the check down.
//! - While down, attempts run every `delay_loop`; `rise` consecutive successes bring it up.
//! - `alpha` starts the check down (it must pass first); otherwise it starts up.
//! - `warmup` delays the first attempt by a random time in `[0, warmup]`, so a reload does not
//!   fire every check at once.

use std::time::{Duration, Instant};

use crate::config::health::{HealthCheck, ServiceHealth};

/// Where a check stands between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckState {
    /// The check's verdict: the real passes it.
    pub up: bool,
    /// Failed attempts in a row while up, i.e. retries used so far.
    pub failures: u32,
    /// Successful attempts in a row while down, towards `rise`.
    pub successes: u32,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// When the next attempt starts.
    pub next_run: Instant,
    /// `Some(up)` when the verdict just changed.
    pub transition: Option<bool>,
}

/// The timing parameters of one check and its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPolicy {
    delay_loop: Duration,
    retry: u32,
    delay_before_retry: Duration,
    rise: u32,
    warmup: Option<Duration>,
    state: CheckState,
}

impl CheckPolicy {
    /// A check in its initial state: down under `alpha`, else up.
    pub fn new(check: &HealthCheck, service: &ServiceHealth) -> Self {
        CheckPolicy {
            delay_loop: service.delay_loop,
            retry: check.retry,
            delay_before_retry: check.delay_before_retry,
            // rise 0 would mean "up without passing": treat it as keepalived's default of 1.
            rise: check.rise.max(1),
            warmup: check.warmup,
            state: CheckState { up: !service.alpha, failures: 0, successes: 0 },
        }
    }

    pub fn state(&self) -> CheckState {
        self.state
    }

    pub fn is_up(&self) -> bool {
        self.state.up
    }

    /// When the first attempt runs: at once, or after `random` scaled into `[0, warmup]`.
    pub fn first_run(&self, now: Instant, random: u64) -> Instant {
        match self.warmup {
            Some(warmup) if !warmup.is_zero() => {
                let span = u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
                let offset = match span.checked_add(1) {
                    Some(modulus) => random % modulus,
                    None => random,
                };
                now + Duration::from_nanos(offset)
            }
            _ => now,
        }
    }

    /// Applies the result of the attempt that just finished at `now`.
    pub fn on_result(&mut self, ok: bool, now: Instant) -> Decision {
        let s = &mut self.state;
        let mut transition = None;
        let mut delay = self.delay_loop;
        if ok {
            s.failures = 0;
            if !s.up {
                s.successes += 1;
                if s.successes >= self.rise {
                    s.up = true;
                    s.successes = 0;
                    transition = Some(true);
                }
            }
        } else {
            s.successes = 0;
            if s.up {
                if s.failures < self.retry {
                    s.failures += 1;
                    delay = self.delay_before_retry;
                } else {
                    s.failures = 0;
                    s.up = false;
                    transition = Some(false);
                }
            }
        }
        Decision { next_run: now + delay, transition }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Location, health::CheckKind};

    const S: Duration = Duration::from_secs(1);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn check(retry: u32, delay_before_retry: Duration, rise: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            connect_timeout: 5 * S,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            retry,
            delay_before_retry,
            warmup: None,
            rise,
            through_vip: false,
            location: Location::default(),
        }
    }

    fn service(delay_loop: Duration, alpha: bool) -> ServiceHealth {
        ServiceHealth { delay_loop, alpha, ..ServiceHealth::default() }
    }

    /// Runs `results` through a policy, each attempt starting when the previous decision said,
    /// and returns (attempt offset from t0, verdict after it, transition) per attempt.
    fn run(policy: &mut CheckPolicy, results: &[bool]) -> Vec<(Duration, bool, Option<bool>)> {
        let t0 = Instant::now();
        let mut at = t0;
        results
            .iter()
            .map(|&ok| {
                let d = policy.on_result(ok, at);
                let row = (at - t0, policy.is_up(), d.transition);
                at = d.next_run;
                row
            })
            .collect()
    }

    #[test]
    fn retry_timing_and_fall() {
        // delay_loop 10 s, retry 2 spaced 1 s: the third failure in a row takes it down.
        let mut p = CheckPolicy::new(&check(2, S, 1), &service(secs(10), false));
        assert!(p.is_up());
        let got = run(&mut p, &[true, false, false, false, false, true]);
        let want = vec![
            (secs(0), true, None),
            (secs(10), true, None),         // first failure: retry in 1 s
            (secs(11), true, None),         // second: retry in 1 s
            (secs(12), false, Some(false)), // retries used up: down, back to delay_loop
            (secs(22), false, None),        // still failing while down: every delay_loop
            (secs(32), true, Some(true)),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_success_resets_the_retries() {
        let mut p = CheckPolicy::new(&check(1, 2 * S, 1), &service(secs(10), false));
        let got = run(&mut p, &[false, true, false, false]);
        let want = vec![
            (secs(0), true, None),
            (secs(2), true, None),
            (secs(12), true, None),
            (secs(14), false, Some(false)),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn retry_zero_falls_at_once() {
        let mut p = CheckPolicy::new(&check(0, S, 1), &service(secs(5), false));
        let got = run(&mut p, &[false, false]);
        assert_eq!(got, vec![(secs(0), false, Some(false)), (secs(5), false, None)]);
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut p = CheckPolicy::new(&check(0, S, 3), &service(secs(5), true));
        assert!(!p.is_up(), "alpha starts down");
        let got = run(&mut p, &[true, true, false, true, true, true, true]);
        let want = vec![
            (secs(0), false, None),
            (secs(5), false, None),
            (secs(10), false, None), // a failure restarts the count
            (secs(15), false, None),
            (secs(20), false, None),
            (secs(25), true, Some(true)),
            (secs(30), true, None),
        ];
        assert_eq!(got, want);
        assert_eq!(p.state(), CheckState { up: true, failures: 0, successes: 0 });
    }

    #[test]
    fn alpha_and_rise_zero() {
        let table = [
            (false, 1, true, None),         // starts up, success keeps it up
            (true, 1, true, Some(true)),    // alpha: the first success brings it up
            (true, 0, true, Some(true)),    // rise 0 behaves as 1
            (true, 1, false, None),         // alpha + failure: stays down, no transition
            (false, 1, false, Some(false)), // retry 0: first failure takes it down
        ];
        for (alpha, rise, ok, transition) in table {
            let mut p = CheckPolicy::new(&check(0, S, rise), &service(S, alpha));
            assert_eq!(p.is_up(), !alpha);
            let d = p.on_result(ok, Instant::now());
            assert_eq!(d.transition, transition, "alpha={alpha} rise={rise} ok={ok}");
        }
    }

    #[test]
    fn warmup_bounds() {
        let now = Instant::now();
        let no_warmup = CheckPolicy::new(&check(0, S, 1), &service(S, false));
        assert_eq!(no_warmup.first_run(now, u64::MAX), now);

        let mut c = check(0, S, 1);
        c.warmup = Some(3 * S);
        let p = CheckPolicy::new(&c, &service(S, false));
        let span = 3_000_000_000u64;
        let table = [
            (0, Duration::ZERO),
            (1, Duration::from_nanos(1)),
            (span, 3 * S),
            (span + 1, Duration::ZERO),
            (span + 2, Duration::from_nanos(1)),
        ];
        for (random, want) in table {
            assert_eq!(p.first_run(now, random) - now, want, "random={random}");
        }
        for random in [u64::MAX, u64::MAX / 3, 12_345_678_901, 7] {
            let offset = p.first_run(now, random) - now;
            assert!(offset <= 3 * S, "{offset:?}");
        }

        c.warmup = Some(Duration::ZERO);
        let zero = CheckPolicy::new(&c, &service(S, false));
        assert_eq!(zero.first_run(now, 42), now);
    }
}
