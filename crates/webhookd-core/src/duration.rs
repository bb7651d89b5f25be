//! Human-written durations (`500ms`, `5s`, `30m`, `2h`, `1d`) as used by the
//! configuration and the retry schedule. Written here rather than pulled in so
//! the error messages can say exactly what was wrong.

use std::fmt::Write as _;
use std::time::Duration;

/// Parses one duration: a whole number followed by `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a duration (write e.g. 500ms, 5s, 5m, 2h, 1d)"
        ));
    }
    let amount: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let unit_seconds = match unit {
        "ms" => return Ok(Duration::from_millis(amount)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(format!("{text:?} needs a unit: ms, s, m, h or d")),
        other => {
            return Err(format!(
                "{other:?} in {text:?} is not a unit (use ms, s, m, h or d)"
            ));
        }
    };
    amount
        .checked_mul(unit_seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Formats a duration the way [`parse_duration`] reads it, choosing the
/// largest unit that divides it exactly.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if millis != 0 && millis.is_multiple_of(size) {
            let _ = write!(out, "{}{unit}", millis / size);
            return out;
        }
    }
    let _ = write!(out, "{millis}ms");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5x").unwrap_err().contains("not a unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(
            parse_duration("-5s")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("1.5s").unwrap_err().contains("not a unit"));
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration("999999999999999999d")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["5s", "5m", "30m", "2h", "14h", "1d", "1500ms", "0ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
