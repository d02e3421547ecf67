//! keepalived's quorum rule: a service is up while the weights of its up reals add up to at least
//! `quorum`, with `hysteresis` on both sides so that one flapping real does not flap the service.

/// A service's quorum before any real has been checked: up, as keepalived starts.
pub const INITIAL: bool = true;

/// The service's quorum state after a change, given the state before it.
///
/// Up stays up until `up_weight_sum < quorum − hysteresis`; down comes back up once
/// `up_weight_sum ≥ quorum + hysteresis`.
pub fn evaluate(was_up: bool, up_weight_sum: u64, quorum: u32, hysteresis: u32) -> bool {
    if was_up {
        up_weight_sum >= u64::from(quorum.saturating_sub(hysteresis))
    } else {
        up_weight_sum >= u64::from(quorum) + u64::from(hysteresis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_table() {
        // (was_up, sum, quorum, hysteresis, now_up)
        let table = [
            (true, 1, 1, 0, true),
            (true, 0, 1, 0, false),
            (false, 1, 1, 0, true),
            (false, 0, 1, 0, false),
            // quorum 5, hysteresis 2: down below 3, up from 7.
            (true, 3, 5, 2, true),
            (true, 2, 5, 2, false),
            (false, 6, 5, 2, false),
            (false, 7, 5, 2, true),
            (true, 4, 5, 2, true),
            (false, 4, 5, 2, false),
            // hysteresis above quorum: never goes down (keepalived's arithmetic).
            (true, 0, 1, 3, true),
            (false, 3, 1, 3, false),
            (false, 4, 1, 3, true),
            // quorum 0: always up.
            (true, 0, 0, 0, true),
            (false, 0, 0, 0, true),
            // large sums do not overflow.
            (false, u64::MAX, u32::MAX, u32::MAX, true),
            (false, u64::from(u32::MAX), u32::MAX, u32::MAX, false),
        ];
        for (was_up, sum, quorum, hysteresis, want) in table {
            assert_eq!(
                evaluate(was_up, sum, quorum, hysteresis),
                want,
                "was_up={was_up} sum={sum} quorum={quorum} hysteresis={hysteresis}"
            );
        }
    }
}
