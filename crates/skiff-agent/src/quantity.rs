//! Kubernetes quantities (`500m`, `64Mi`, `1.5`, `2e3`) as the numbers cgroups take.

pub use skiff_apimachinery::quantity::{bytes, millis};
