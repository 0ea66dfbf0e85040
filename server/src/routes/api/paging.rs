//! The API's list parameters, checked one way everywhere: `limit` (1..=1000, default 100), `offset`, and
//! filters that take one of a few words. A bad value is a 400 naming its parameter.

use crate::error::ApiError;

/// Largest page.
pub const MAX_LIMIT: i64 = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 100;

/// `?limit=` (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
pub fn limit(n: Option<i64>) -> Result<i64, ApiError> {
    match n {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", format!("must be in 1..={MAX_LIMIT}"))),
    }
}

/// `?limit=&offset=` taken as text, so that a value that is not an integer is named in the 400 (serde's
/// query error would not name it).
pub fn page(limit_text: Option<String>, offset: Option<String>) -> Result<(i64, i64), ApiError> {
    let int = |field: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        v.map(|s| s.parse::<i64>().map_err(|_| ApiError::field(field, "must be an integer"))).transpose()
    };
    let limit = limit(int("limit", limit_text)?)?;
    let offset = match int("offset", offset)? {
        None => 0,
        Some(n) if n >= 0 => n,
        Some(_) => return Err(ApiError::field("offset", "must be >= 0")),
    };
    Ok((limit, offset))
}

/// A filter that must be one of `choices` when given: "must be a, b or c" otherwise.
pub fn one_of(field: &str, v: Option<&str>, choices: &[&str]) -> Result<(), ApiError> {
    match v {
        Some(s) if !choices.contains(&s) => {
            let words = match choices.split_last() {
                Some((last, [])) => (*last).to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            Err(ApiError::field(field, format!("must be {words}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_offsets_and_choices_name_the_parameter() {
        assert_eq!(limit(None).unwrap(), 100);
        assert_eq!(limit(Some(0)).unwrap_err().error, "must be in 1..=1000");
        assert_eq!(page(Some("5".into()), Some("10".into())).unwrap(), (5, 10));
        assert_eq!(page(Some("x".into()), None).unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(page(None, Some("-1".into())).unwrap_err().error, "must be >= 0");
        let e = one_of("state", Some("x"), &["pending", "firing", "resolved"]).unwrap_err();
        assert_eq!((e.field.as_deref(), e.error.as_str()), (Some("state"), "must be pending, firing or resolved"));
        assert!(one_of("state", None, &["a"]).is_ok());
    }
}
