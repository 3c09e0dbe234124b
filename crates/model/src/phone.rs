//! Phone numbers in E.164, validated and normalised with libphonenumber's
//! metadata (the `phonenumber` crate), so `+1 (415) 555-0100`, `4155550100`
//! (with region US) and `tel:+14155550100` all become `+14155550100`.

use std::fmt;
use std::str::FromStr;

use phonenumber::country;
use phonenumber::Mode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelError;

/// A valid phone number in E.164 form (`+` then up to 15 digits).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(value_type = String, example = "+14155550100")]
pub struct E164(String);

/// The region used for numbers written without a country code (ISO 3166 alpha-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(country::Id);

impl Region {
    pub fn code(&self) -> String {
        format!("{:?}", self.0)
    }
}

impl Default for Region {
    fn default() -> Self {
        Region(country::Id::US)
    }
}

impl FromStr for Region {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<country::Id>()
            .map(Region)
            .map_err(|_| {
                ModelError::invalid(
                    "region",
                    format!("`{s}` is not an ISO 3166 two-letter region code such as US, GB or DE"),
                )
            })
    }
}

impl E164 {
    /// Parses a number as a caller would type it. Numbers without a `+` country
    /// code are read in `region`. The error says why the number was refused.
    pub fn parse(input: &str, region: Region) -> Result<Self, ModelError> {
        let trimmed = input.trim();
        let trimmed = trimmed
            .strip_prefix("tel:")
            .unwrap_or(trimmed)
            .split(';')
            .next()
            .unwrap_or_default();
        if trimmed.is_empty() {
            return Err(ModelError::invalid("phone", "is empty"));
        }
        if trimmed.len() > 40 {
            return Err(ModelError::invalid(
                "phone",
                "is longer than any phone number",
            ));
        }
        if let Some(bad) = trimmed
            .chars()
            .find(|c| !(c.is_ascii_digit() || " +-().".contains(*c)))
        {
            return Err(ModelError::invalid(
                "phone",
                format!("`{trimmed}` contains `{bad}`; use digits, optionally with a leading + and country code"),
            ));
        }
        let number = phonenumber::parse(Some(region.0), trimmed).map_err(|e| {
            ModelError::invalid("phone", format!("`{trimmed}` is not a phone number ({e})"))
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(ModelError::invalid(
                "phone",
                format!(
                    "`{trimmed}` is not a valid number for its country; write it in E.164 form such as +14155550100"
                ),
            ));
        }
        Ok(E164(number.format().mode(Mode::E164).to_string()))
    }

    /// Parses a value that must already be in E.164 form (`+` and digits), the
    /// form we store. Used when reading our own database and strict inputs.
    pub fn parse_strict(input: &str) -> Result<Self, ModelError> {
        let s = input.trim();
        if !s.starts_with('+') {
            return Err(ModelError::invalid(
                "phone",
                format!("`{s}` must start with + and the country code, such as +14155550100"),
            ));
        }
        let parsed = Self::parse(s, Region::default())?;
        Ok(parsed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Phone numbers are personal data: show only the country code and the
        // last two digits in debug output.
        let n = self.0.len();
        write!(
            f,
            "E164({}…{})",
            &self.0[..3.min(n)],
            &self.0[n.saturating_sub(2)..]
        )
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        E164::parse(&s, Region::default()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Region {
        Region::default()
    }

    #[test]
    fn normalises_common_spellings() {
        for input in [
            "+14155550100",
            "+1 (415) 555-0100",
            "415-555-0100",
            "tel:+14155550100",
            " 4155550100 ",
        ] {
            assert_eq!(
                E164::parse(input, us()).expect(input).as_str(),
                "+14155550100"
            );
        }
        let gb: Region = "gb".parse().expect("GB is a region");
        assert_eq!(
            E164::parse("020 7946 0018", gb).expect("uk").as_str(),
            "+442079460018"
        );
    }

    #[test]
    fn refuses_with_a_reason() {
        let err = E164::parse("call me", us()).unwrap_err();
        assert!(err.to_string().contains("contains `c`"), "{err}");
        let err = E164::parse("+1 555", us()).unwrap_err();
        assert!(err.to_string().contains("not a valid number"), "{err}");
        let err = E164::parse("", us()).unwrap_err();
        assert_eq!(err.to_string(), "phone: is empty");
        assert!(E164::parse_strict("4155550100").is_err());
        assert!("XX".parse::<Region>().is_err());
    }

    #[test]
    fn debug_hides_the_subscriber_part() {
        let n = E164::parse("+14155550100", us()).expect("valid");
        assert_eq!(format!("{n:?}"), "E164(+14…00)");
    }
}
