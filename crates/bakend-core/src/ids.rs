//! Public identifiers are a short prefix plus a lowercase UUID v4 (`rec_…`, `evt_…`, `usr_…`).

pub const RECORD: &str = "rec_";
pub const EVENT: &str = "evt_";
pub const USER: &str = "usr_";
pub const FILE: &str = "fil_";
pub const SESSION: &str = "ses_";
pub const CLIENT: &str = "rt_";

/// A fresh random identifier with the given prefix (UUID v4).
pub fn new_id(prefix: &str) -> String {
    with_prefix(prefix, uuid::Uuid::new_v4())
}

/// A fresh identifier that sorts by creation time (UUID v7: millisecond timestamp, then
/// randomness). Used for records: new ids land at the end of the primary-key index instead of
/// at random pages, which keeps each commit's write small however large the table grows, and
/// makes `id` order match creation order. Same wire shape as a v4 id.
pub fn new_time_ordered_id(prefix: &str) -> String {
    with_prefix(prefix, uuid::Uuid::now_v7())
}

/// A random secret of 64 hex characters (256 bits), for generated signing keys.
pub fn random_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

fn with_prefix(prefix: &str, id: uuid::Uuid) -> String {
    let mut out = String::with_capacity(prefix.len() + 36);
    out.push_str(prefix);
    let mut buf = uuid::Uuid::encode_buffer();
    out.push_str(id.hyphenated().encode_lower(&mut buf));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_ordered_ids_sort_by_creation() {
        let ids: Vec<String> = (0..100)
            .map(|_| super::new_time_ordered_id("rec_"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(uuid::Uuid::parse_str(&ids[0][4..]).is_ok());
    }

    #[test]
    fn ids_have_prefix_and_uuid() {
        let id = super::new_id(super::RECORD);
        assert!(id.starts_with("rec_"));
        assert_eq!(id.len(), 40);
        assert!(uuid::Uuid::parse_str(&id[4..]).is_ok());
    }
}
