//! CEL validation rules of CRD schemas (`x-kubernetes-validations`), as kube-apiserver
//! evaluates them, through the `cel` crate's parser and interpreter:
//!
//! - [`compile`]: each version's rules compiled once when the CRD registers it (and checked
//!   when the CRD is written: a rule that does not parse refuses the CRD);
//! - [`eval`]: the rules of an object being written, with `self` (and `oldSelf` for
//!   transition rules on update) bound, failures as kube's field errors;
//! - [`value`]: JSON values as CEL values.
//!
//! Rules are parsed, not type-checked: a reference to a field the schema lacks, or a rule
//! that is not a `bool`, shows at evaluation instead of when the CRD is written. There are
//! no cost limits, and kube's Kubernetes libraries (`quantity`, `url`, `ip`, `cidr`,
//! `format`, `semver`, `isSorted` ...) are missing; the standard library with its macros
//! and the `strings` and `lists` extensions are there.

pub mod compile;
pub mod eval;
pub mod value;

pub use compile::Rules;
pub use eval::validate;
