//! The field table is bounded: outside data can name any number of fields. Its own test binary,
//! because the table is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use correlator::{Event, Field, MAX_FIELDS};

#[test]
fn past_the_limit_new_field_names_become_overflow() {
    let early = Field::intern("process.name");
    let mut last = early;
    for i in 0..MAX_FIELDS {
        last = Field::intern(&format!("flood.f{i}"));
        if last.name().as_ref() == Field::OVERFLOW_NAME {
            break;
        }
    }
    assert_eq!(
        last.name().as_ref(),
        Field::OVERFLOW_NAME,
        "the table never filled"
    );
    assert!(Field::overflowed() >= 1);
    // Names interned before the limit keep their ids; names after it share the overflow field.
    assert_eq!(Field::intern("process.name"), early);
    assert_eq!(
        Field::intern("another.new.field").name().as_ref(),
        Field::OVERFLOW_NAME
    );
    let before = Field::overflowed();
    // An event from outside with a new field still decodes; the field is kept under `_overflow`.
    let ev = Event::from_json(&serde_json::json!({"process": {"name": "sh"}, "brand": {"new": 1}}))
        .unwrap();
    assert_eq!(
        ev.get(Field::intern("process.name"))
            .and_then(|v| v.as_str()),
        Some("sh")
    );
    assert!(ev.get(Field::intern(Field::OVERFLOW_NAME)).is_some());
    assert!(Field::overflowed() > before);
}
