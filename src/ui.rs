//! portok's own words on the terminal: its `portok:` lines, how it shows a duration, and
//! the usage error that exits 2.

use std::io::IsTerminal;

/// Print one of portok's own lines: `portok:` on stderr, coloured only on a terminal.
pub fn say(msg: &str) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if color {
        eprintln!("\x1b[36mportok:\x1b[0m {msg}");
    } else {
        eprintln!("portok: {msg}");
    }
}

/// An error and its causes as one line, `outer: inner: innermost`, leaving out a cause the
/// text already says (many errors put their source in their own message).
pub fn join_causes(texts: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for t in texts {
        if out.is_empty() {
            out = t;
        } else if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
    }
    out
}

/// A mistake in how a command was called: exit 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A duration in its two largest units: `42s`, `5m3s`, `2h5m`, `3d4h`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A duration as a user writes it: `90` (seconds), `3s`, `15m`, `1h30m`, `2d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it like 90, 30s, 15m or 1h30m");
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() || t.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let texts = [
            "cannot read or write /s/routes.json: No space left on device (os error 28)",
            "No space left on device (os error 28)",
        ];
        assert_eq!(super::join_causes(texts.map(String::from)), texts[0]);
        let texts = ["starting the daemon", "permission denied"];
        assert_eq!(
            super::join_causes(texts.map(String::from)),
            "starting the daemon: permission denied"
        );
    }

    #[test]
    fn durations_parse_as_written() {
        use std::time::Duration;
        for (text, secs) in [
            ("90", 90),
            ("3s", 3),
            ("15m", 900),
            ("1h30m", 5400),
            ("2d", 172800),
        ] {
            assert_eq!(
                super::parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "m", "15x", "1.5m", "10m5"] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_show_their_two_largest_units() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m0s"),
            (303, "5m3s"),
            (7500, "2h5m"),
            (86399, "23h59m"),
            (3 * 86400 + 4 * 3600 + 5, "3d4h"),
        ];
        for (secs, shown) in cases {
            assert_eq!(super::duration(secs), shown);
        }
    }
}
