//! OpenAPI schemas that the field attributes of the derive cannot express (feature `openapi`).

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

/// [`crate::decision::PanicSettings::threshold`]: 0 (off) or a ratio in 1..=100, nothing in between.
pub fn panic_threshold() -> Schema {
    let off = ObjectBuilder::new().schema_type(Type::Number).minimum(Some(0.0)).maximum(Some(0.0));
    let on = ObjectBuilder::new().schema_type(Type::Number).minimum(Some(1.0)).maximum(Some(100.0));
    OneOfBuilder::new()
        .item(off)
        .item(on)
        .description(Some("Observed / target ratio that starts panic mode (1..=100); 0 disables it"))
        .into()
}
