//! Value parsers for numeric arguments, so clap refuses a bad value where it parses it,
//! naming the accepted range (`--max-reject-rate nan`, `--k 0`, `--margin -1`). The
//! arguments that use them also set `allow_negative_numbers`, so `-1` reaches the parser
//! instead of being taken for a flag.

/// A whole number of at least 1.
pub fn positive_usize(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 && n <= usize::MAX as i128 => Ok(n as usize),
        Ok(n) => Err(format!(
            "expected a whole number from 1 to {}, got {n}",
            usize::MAX
        )),
        Err(_) => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

/// A whole number of at least 1 that fits in 32 bits (image sides, tile sizes).
pub fn positive_u32(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 && n <= u32::MAX as i128 => Ok(n as u32),
        Ok(n) => Err(format!(
            "expected a whole number from 1 to {}, got {n}",
            u32::MAX
        )),
        Err(_) => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
}

/// A whole number from 0 (seeds).
pub fn seed(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 0 && n <= u64::MAX as i128 => Ok(n as u64),
        Ok(n) => Err(format!(
            "expected a whole number from 0 to {}, got {n}",
            u64::MAX
        )),
        Err(_) => Err(format!("expected a whole number from 0, got {s:?}")),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, got {s:?}"))?;
    if !x.is_finite() {
        return Err(format!("expected a finite number, got {s}"));
    }
    Ok(x)
}

/// A fraction in [0, 1] (rates).
pub fn fraction(s: &str) -> Result<f64, String> {
    let x = finite(s).map_err(|e| format!("{e} (a fraction from 0 to 1)"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("expected a fraction from 0 to 1, got {s}"));
    }
    Ok(x)
}

/// A finite number above 0 (learning rate, margin).
pub fn positive_f64(s: &str) -> Result<f64, String> {
    let x = finite(s).map_err(|e| format!("{e} (a number above 0)"))?;
    if x <= 0.0 {
        return Err(format!("expected a number above 0, got {s}"));
    }
    Ok(x)
}

/// A finite number of at least 0 (durations).
pub fn non_negative_f64(s: &str) -> Result<f64, String> {
    let x = finite(s).map_err(|e| format!("{e} (a number from 0)"))?;
    if x < 0.0 {
        return Err(format!("expected a number from 0, got {s}"));
    }
    Ok(x)
}

/// A factor in (0, 1] (learning-rate decay).
pub fn decay(s: &str) -> Result<f64, String> {
    let x = finite(s).map_err(|e| format!("{e} (a number above 0 and at most 1)"))?;
    if !(x > 0.0 && x <= 1.0) {
        return Err(format!("expected a number above 0 and at most 1, got {s}"));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_named_in_the_messages() {
        assert_eq!(positive_usize("3"), Ok(3));
        assert!(positive_usize("0").unwrap_err().contains("from 1 to"));
        assert!(positive_usize("-1").unwrap_err().contains("got -1"));
        assert!(positive_usize("x").unwrap_err().contains("at least 1"));
        assert_eq!(fraction("0.5"), Ok(0.5));
        assert_eq!(
            fraction("2").unwrap_err(),
            "expected a fraction from 0 to 1, got 2"
        );
        assert_eq!(
            fraction("nan").unwrap_err(),
            "expected a finite number, got nan (a fraction from 0 to 1)"
        );
        assert!(positive_f64("-0.2").unwrap_err().contains("above 0"));
        assert!(positive_f64("inf").unwrap_err().contains("finite"));
        assert!(decay("1.5").unwrap_err().contains("at most 1"));
        assert_eq!(decay("1"), Ok(1.0));
        assert!(non_negative_f64("-1").unwrap_err().contains("from 0"));
        assert!(seed("-5").unwrap_err().contains("from 0"));
        assert!(positive_u32("5000000000")
            .unwrap_err()
            .contains("4294967295"));
    }
}

/// A device: `cpu`, `cuda` or `cuda:N`.
pub fn device(s: &str) -> Result<tailor::model::DeviceSpec, String> {
    s.parse().map_err(|e: tailor::Error| e.to_string())
}

/// A shard `K/N` of a catalog, 0 <= K < N.
pub fn shard(s: &str) -> Result<tailor::embed::Shard, String> {
    let bad = || format!("expected K/N with 0 <= K < N, e.g. 0/4, got {s:?}");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    tailor::embed::Shard::new(k, n).map_err(|_| bad())
}

/// An attribute, optionally weighted: `ATTR` (weight 1) or `ATTR=WEIGHT`.
pub fn weighted(s: &str) -> Result<tailor::query::Weighted, String> {
    tailor::query::Weighted::parse(s).map_err(|e| e.to_string())
}

/// A label condition `ATTR=VALUE` (checked against the index's labels when it is open).
pub fn condition(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, v)) if !a.is_empty() => Ok((a.to_string(), v.to_string())),
        _ => Err(format!("expected ATTR=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod typed_tests {
    use super::*;

    #[test]
    fn shards_devices_weights_and_conditions_parse_into_library_values() {
        let s = shard("1/4").unwrap();
        assert_eq!((s.index, s.count), (1, 4));
        for bad in ["4/4", "1", "a/2", "1/0", ""] {
            assert!(shard(bad).unwrap_err().contains("expected K/N"), "{bad}");
        }
        assert_eq!(device("cpu").unwrap(), tailor::model::DeviceSpec::Cpu);
        assert_eq!(device("cuda:2").unwrap().to_string(), "cuda:2");
        assert!(device("gpu")
            .unwrap_err()
            .contains("expected cpu, cuda or cuda:N"));
        assert_eq!(weighted("a=0.5").unwrap().weight, 0.5);
        assert!(weighted("a=x").is_err());
        assert_eq!(condition("c=red").unwrap(), ("c".into(), "red".into()));
        assert!(condition("c").is_err());
        assert!(condition("=red").is_err());
    }
}
