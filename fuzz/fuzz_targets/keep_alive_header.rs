//! Fuzzes the `Keep-Alive` header parser with arbitrary bytes.
//!
//! Besides "never panics", it checks one property that holds for every accepted
//! value: a list joined with itself (`v, v`) parses to the same hint, since repeated
//! parameters keep the smallest value.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match closefirst::keepalive::parse(data) {
        Ok(hint) => {
            let mut twice = data.to_vec();
            twice.extend_from_slice(b", ");
            twice.extend_from_slice(data);
            let again = closefirst::keepalive::parse(&twice)
                .unwrap_or_else(|e| panic!("`v` parsed but `v, v` did not: {e}"));
            assert_eq!(again, hint, "`v, v` differs from `v`");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("malformed Keep-Alive header: "));
        }
    }
});
