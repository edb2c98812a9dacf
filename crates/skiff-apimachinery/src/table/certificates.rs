//! The printer of CertificateSigningRequests, as kube-apiserver's
//! `printCertificateSigningRequest`: the signer, who asked, the requested duration and the
//! condition (`Pending`, `Approved`, `Denied`, then `,Failed` and `,Issued`).

use std::time::SystemTime;

use serde_json::{Value, json};

use super::printers::*;
use super::{Column, name_of};
use crate::time::human_duration;

pub(super) const CSR: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "string", 0),
    col("Requestor", "string", 0),
    col("RequestedDuration", "string", 0),
    col("Condition", "string", 0),
];

/// The condition column: the decision first (denied wins over approved), then failure and
/// issuance.
fn csr_condition(obj: &Value) -> String {
    let has = |wanted: &str| {
        list(obj, "/status/conditions")
            .iter()
            .any(|c| text(c, "/type") == wanted)
    };
    let mut condition = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        condition.push_str(",Failed");
    }
    if !text(obj, "/status/certificate").is_empty() {
        condition.push_str(",Issued");
    }
    condition
}

pub(super) fn csr(obj: &Value, now: SystemTime) -> Vec<Value> {
    let signer = match text(obj, "/spec/signerName") {
        "" => "<none>",
        s => s,
    };
    let duration = match obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        Some(seconds) => human_duration(seconds),
        None => "<none>".to_string(),
    };
    vec![
        json!(name_of(obj)),
        age(obj, now),
        json!(signer),
        json!(text(obj, "/spec/username")),
        json!(duration),
        json!(csr_condition(obj)),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_column_reads_like_kubectl() {
        let with = |status: Value| json!({"metadata": {"name": "c"}, "status": status});
        assert_eq!(csr_condition(&with(json!({}))), "Pending");
        assert_eq!(
            csr_condition(&with(
                json!({"conditions": [{"type": "Approved"}], "certificate": "Zm9v"})
            )),
            "Approved,Issued"
        );
        assert_eq!(
            csr_condition(&with(json!({"conditions": [{"type": "Denied"}]}))),
            "Denied"
        );
        assert_eq!(
            csr_condition(&with(
                json!({"conditions": [{"type": "Approved"}, {"type": "Failed"}]})
            )),
            "Approved,Failed"
        );
    }

    #[test]
    fn a_row_names_the_signer_requestor_and_duration() {
        let obj = json!({
            "metadata": {"name": "jane"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "admin", "expirationSeconds": 86400},
        });
        let row = csr(&obj, SystemTime::now());
        assert_eq!(row[2], "kubernetes.io/kube-apiserver-client");
        assert_eq!(row[3], "admin");
        assert_eq!(row[4], "24h");
        assert_eq!(row[5], "Pending");
    }
}
