//! Public identifiers are a short prefix plus a lowercase UUID v4 (`rec_…`, `evt_…`, `usr_…`).

pub const RECORD: &str = "rec_";
pub const EVENT: &str = "evt_";
pub const USER: &str = "usr_";
pub const FILE: &str = "fil_";
pub const SESSION: &str = "ses_";
pub const CLIENT: &str = "rt_";

/// A fresh identifier with the given prefix.
pub fn new_id(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 36);
    out.push_str(prefix);
    let mut buf = uuid::Uuid::encode_buffer();
    out.push_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_have_prefix_and_uuid() {
        let id = super::new_id(super::RECORD);
        assert!(id.starts_with("rec_"));
        assert_eq!(id.len(), 40);
        assert!(uuid::Uuid::parse_str(&id[4..]).is_ok());
    }
}
