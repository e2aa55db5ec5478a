//! The control API's request bodies and the answers the CLI reads: any
//! bytes either fail to parse or parse into a value that serialises and
//! parses back to itself (what the server accepts is what it means).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stamp_model::wire::{StepRequest, TicketDto, TransitionRequest};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&v).expect("serialises");
        let again: T = serde_json::from_slice(&text).expect("parses what it wrote");
        assert_eq!(again, v);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<TransitionRequest>(data);
    round_trip::<StepRequest>(data);
    round_trip::<TicketDto>(data);
});
