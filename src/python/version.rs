//! The target interpreter's exact version: from `Py_Version` (3.11+) in its memory, or from
//! the `PY_VERSION` string in its read-only data, checked against the library's name.

use std::fmt;

/// A CPython version such as 3.11.7 or 3.13.0rc2.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PythonVersion {
    /// Major version (3).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Micro (patch) version; `None` while only `major.minor` is known (the interpreter has
    /// not finished starting, so `sys.version` is not there yet).
    pub micro: Option<u8>,
    /// Release suffix such as `rc2`, empty for a final release.
    pub suffix: String,
}

impl PythonVersion {
    /// Decodes `PY_VERSION_HEX` (`0xMMmmuuLS`).
    pub fn from_hex(hex: u64) -> Option<Self> {
        let major = ((hex >> 24) & 0xff) as u8;
        let minor = ((hex >> 16) & 0xff) as u8;
        let micro = ((hex >> 8) & 0xff) as u8;
        let level = (hex >> 4) & 0xf;
        let serial = hex & 0xf;
        if !(2..=3).contains(&major) || hex >> 32 != 0 {
            return None;
        }
        let suffix = match level {
            0xa => format!("a{serial}"),
            0xb => format!("b{serial}"),
            0xc => format!("rc{serial}"),
            0xf => String::new(),
            _ => return None,
        };
        Some(PythonVersion {
            major,
            minor,
            micro: Some(micro),
            suffix,
        })
    }

    /// A version of which only `major.minor` is known.
    pub fn minor_only(major: u8, minor: u8) -> Self {
        PythonVersion {
            major,
            minor,
            micro: None,
            suffix: String::new(),
        }
    }

    /// Parses a `PY_VERSION` string such as `3.9.18` or `3.13.0rc2` (and nothing else).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let major: u8 = parts.next()?.parse().ok()?;
        let minor: u8 = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let micro: u8 = rest[..digits_end].parse().ok()?;
        let suffix = &rest[digits_end..];
        let suffix_ok = suffix.is_empty()
            || ["a", "b", "rc"].iter().any(|p| {
                suffix
                    .strip_prefix(p)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
            || suffix == "+";
        if !(2..=3).contains(&major) || !suffix_ok {
            return None;
        }
        Some(PythonVersion {
            major,
            minor,
            micro: Some(micro),
            suffix: suffix.to_string(),
        })
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.micro {
            Some(micro) => write!(f, "{}.{}.{}{}", self.major, self.minor, micro, self.suffix),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_text_agree() {
        let from_hex = PythonVersion::from_hex(0x030b07f0);
        assert_eq!(from_hex, PythonVersion::parse("3.11.7"));
        assert_eq!(from_hex.map(|v| v.to_string()).as_deref(), Some("3.11.7"));
        let rc = PythonVersion::from_hex(0x030d00c2);
        assert_eq!(rc.map(|v| v.to_string()).as_deref(), Some("3.13.0rc2"));
    }

    #[test]
    fn rejects_non_versions() {
        assert_eq!(PythonVersion::parse("3.11"), None);
        assert_eq!(PythonVersion::parse("3.11.x"), None);
        assert_eq!(PythonVersion::parse("1.2.3"), None);
        assert_eq!(PythonVersion::parse("3.9.18 (main"), None);
        assert_eq!(PythonVersion::from_hex(0xffff_ffff_0000), None);
    }
}
