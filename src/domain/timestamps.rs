//! The timestamp formats of the APIs Herald serves, in one place: each API answers in its
//! own and clients parse them exactly.

use chrono::{DateTime, Utc};

/// Zaqar's dead-letter `failed_at`: microseconds and `Z` (`2024-01-02T03:04:05.000006Z`).
pub fn zaqar_micros(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Zaqar's topic stats (`oldest`/`newest` `created`): whole seconds and `Z`.
pub fn zaqar_seconds(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Cinder's `created_at`/`expires_at` of user messages: microseconds, no zone.
pub fn cinder(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn each_api_keeps_its_format() {
        let t =
            Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(6);
        assert_eq!(zaqar_micros(t), "2024-01-02T03:04:05.000006Z");
        assert_eq!(zaqar_seconds(t), "2024-01-02T03:04:05Z");
        assert_eq!(cinder(t), "2024-01-02T03:04:05.000006");
    }
}
