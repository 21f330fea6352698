//! SQL_REDO parser: any input either parses or fails with an error (never panics), a parsed
//! statement renders back to SQL that parses to the same statement, and converting its
//! literals to values never panics. The same for the LOB fragment parser (LOB_WRITE rows).
#![no_main]

use syncmesh_connectors::sources::oracle::sql_redo::{parse_lob, parse_redo};
use syncmesh_connectors::sources::oracle::values::to_value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fragment) = parse_lob(sql) {
        let again = fragment.to_sql();
        match parse_lob(&again) {
            Ok(reparsed) => assert_eq!(reparsed, fragment, "{again}"),
            Err(e) => panic!("rendered LOB fragment does not parse: {e}\n{again}"),
        }
    }
    let Ok(statement) = parse_redo(sql) else {
        return;
    };
    for (_, literal) in statement.values.iter().chain(&statement.before) {
        let _ = to_value(literal, None);
    }
    let again = statement.to_sql();
    match parse_redo(&again) {
        Ok(reparsed) => assert_eq!(reparsed, statement, "{again}"),
        Err(e) => panic!("rendered statement does not parse: {e}\n{again}"),
    }
});
