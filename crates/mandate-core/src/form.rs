//! `application/x-www-form-urlencoded` parameters, checked the OAuth way:
//! RFC 6749 §3.1 — parameters sent without a value are treated as omitted, and
//! request and response parameters must not be included more than once.

use crate::Error;

/// Most parameters one form may carry.
pub const MAX_FORM_PARAMS: usize = 64;

/// Parsed form parameters.
#[derive(Debug, Clone, Default)]
pub struct FormParams(Vec<(String, String)>);

impl FormParams {
    /// Decodes a body. The caller has checked size and content type; this
    /// checks UTF-8 and the parameter count.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if std::str::from_utf8(body).is_err() {
            return Err(Error::InvalidRequest("request body is not UTF-8".into()));
        }
        let mut params = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            if params.len() == MAX_FORM_PARAMS {
                return Err(Error::InvalidRequest("too many parameters".into()));
            }
            // Percent-escapes that do not decode to UTF-8 come back as U+FFFD.
            if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
                return Err(Error::InvalidRequest("parameter is not UTF-8".into()));
            }
            if !v.is_empty() {
                params.push((k.into_owned(), v.into_owned()));
            }
        }
        Ok(Self(params))
    }

    /// From already-decoded pairs (tests, query strings).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect())
    }

    /// The single value of `name`; repeated → `invalid_request`.
    pub fn single(&self, name: &str) -> Result<Option<&str>, Error> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name {
                if found.is_some() {
                    return Err(Error::InvalidRequest(
                        format!("parameter {name} is repeated").into(),
                    ));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// The single value of `name`, which must be present.
    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.single(name)?
            .ok_or_else(|| Error::InvalidRequest(format!("parameter {name} is missing").into()))
    }

    /// Every parameter, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Every value of `name` (for parameters that may repeat, like `resource`).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_empty_and_invalid() {
        let f = FormParams::parse(b"a=1&a=2&b=&c=x%20y").unwrap();
        assert!(f.single("a").is_err());
        assert_eq!(f.single("b").unwrap(), None);
        assert_eq!(f.single("c").unwrap(), Some("x y"));
        assert!(FormParams::parse(b"a=%FF").is_err());
        assert!(FormParams::parse(&[0x61, 0x3d, 0xff]).is_err());
        let many: String = (0..=MAX_FORM_PARAMS).map(|i| format!("p{i}=v&")).collect();
        assert!(FormParams::parse(many.as_bytes()).is_err());
    }
}
