//! What the benchmarks share: the events of a typical page.
//!
//! They take after the events `bench/run` writes for its page reads (an
//! order with a line or two), padded to about 200 bytes of JSON.

/// The events of a page, as `bench/run` reads them (v5's default page).
pub const PAGE: u64 = 20;

/// The stream the events are in.
pub const STREAM: &str = "order-1234";

/// The type of every event.
pub const EVENT_TYPE: &str = "OrderPlaced";

/// The JSON data of event `number`: about 200 bytes, each different.
pub fn payload(number: u64) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"orderId":"order-1234-{n}","amount":{n}.5,"currency":"EUR","#,
            r#""lines":[{{"sku":"SKU-{sku}","quantity":{quantity}}},{{"sku":"SKU-{next}","quantity":1}}],"#,
            r#""customer":"customer-{n}","note":"benchmark event, padded to a typical size"}}"#
        ),
        n = number,
        sku = number % 97,
        next = (number + 1) % 97,
        quantity = 1 + number % 3,
    )
    .into_bytes()
}
