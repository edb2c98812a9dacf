//! Real kubectl (1.27, the oldest with `--subresource`, and 1.33) against `skiff server` with
//! a CRD that has a schema: defaults and pruning visible in `get -o json`, invalid objects
//! refused with kube-apiserver's messages, `kubectl scale` and `patch --subresource=status`;
//! and (1.33) CEL `x-kubernetes-validations`, transition rules included.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::process::{Command, Output};

use serde_json::Value;
use server_support::{KUBECTL_DIR, Server, run, run_with_stdin};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              replicas: {type: integer, default: 1}
              mode: {type: string, enum: [fast, slow], default: fast}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
              phase: {type: string}
"#;

const WIDGET: &str = r#"apiVersion: example.com/v1
kind: Widget
metadata:
  name: sprocket
spec:
  size: 3
  colour: red
"#;

const INVALID: &str = r#"apiVersion: example.com/v1
kind: Widget
metadata:
  name: broken
spec:
  size: 3
  replicas: three
"#;

const NON_STRUCTURAL: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            properties:
              size: {type: integer}
"#;

struct Kubectl<'a> {
    server: &'a Server,
    version: &'a str,
}

impl Kubectl<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut command = self.server.kubectl(self.version);
        command.args(args);
        command
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        run_with_stdin(&mut self.cmd(args), input)
    }

    /// Runs kubectl; panics (with its stderr) when it fails; gives (stdout, stderr).
    fn ok(&self, args: &[&str], input: Option<&str>) -> (String, String) {
        let out = match input {
            Some(input) => self.run_stdin(args, input),
            None => run(&mut self.cmd(args)),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "kubectl {} {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}\nserver log:\n{}",
            self.version,
            self.server.log()
        );
        (stdout, stderr)
    }

    /// Runs kubectl expecting it to fail; gives its stderr.
    fn fails(&self, args: &[&str], input: &str) -> String {
        let out = self.run_stdin(args, input);
        assert!(
            !out.status.success(),
            "kubectl {} {args:?} should have failed:\n{}",
            self.version,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all, None).0).unwrap()
    }
}

fn custom_resources(version: &str) {
    let path = format!("{KUBECTL_DIR}/kubectl.{version}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: this machine image ships kubectl 1.27-1.33"
    );
    let server = Server::start();
    let k = Kubectl {
        server: &server,
        version,
    };

    // A non-structural schema is refused; a structural one is established.
    let refused = k.fails(&["apply", "-f", "-"], NON_STRUCTURAL);
    assert!(
        refused.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"
        ),
        "{refused}"
    );
    k.ok(&["apply", "-f", "-"], Some(CRD));
    k.ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.com",
            "--timeout=30s",
        ],
        None,
    );

    // `kubectl explain` reads the schema from OpenAPI v3.
    let (explained, _) = k.ok(&["explain", "widgets.spec"], None);
    assert!(
        explained.contains("What the widget should be.") && explained.contains("size"),
        "{explained}"
    );

    // kubectl's default strict validation refuses the unknown field ...
    let strict = k.fails(&["apply", "-f", "-"], WIDGET);
    assert_eq!(
        strict,
        "Error from server (BadRequest): error when creating \"STDIN\": Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.colour\""
    );
    // ... `--validate=warn` warns and the server prunes it; defaults are filled in.
    let (_, warned) = k.ok(&["apply", "--validate=warn", "-f", "-"], Some(WIDGET));
    assert!(
        warned.contains("Warning: unknown field \"spec.colour\""),
        "{warned}"
    );
    let widget = k.json(&["get", "widget", "sprocket"]);
    assert_eq!(
        widget["spec"],
        serde_json::json!({"size": 3, "replicas": 1, "mode": "fast"})
    );
    assert_eq!(widget["metadata"]["generation"], 1);

    // An invalid object is refused with the causes kube-apiserver gives.
    let invalid = k.fails(&["apply", "-f", "-"], INVALID);
    assert_eq!(
        invalid,
        "The Widget \"broken\" is invalid: spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
    );

    // `kubectl scale` goes through the scale subresource at the CRD's paths.
    let (out, _) = k.ok(&["scale", "widget/sprocket", "--replicas=4"], None);
    assert_eq!(out.trim(), "widget.example.com/sprocket scaled");
    let widget = k.json(&["get", "wd", "sprocket"]);
    assert_eq!(widget["spec"]["replicas"], 4);
    assert_eq!(widget["metadata"]["generation"], 2);

    // The status subresource changes only .status, without a new generation.
    k.ok(
        &[
            "patch",
            "widget",
            "sprocket",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":9},"status":{"replicas":4,"selector":"app=sprocket","phase":"Ready"}}"#,
        ],
        None,
    );
    let widget = k.json(&["get", "widget", "sprocket"]);
    assert_eq!(widget["status"]["phase"], "Ready");
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(widget["metadata"]["generation"], 2);
    let (raw, _) = k.ok(
        &[
            "get",
            "--raw",
            "/apis/example.com/v1/namespaces/default/widgets/sprocket/scale",
        ],
        None,
    );
    let scale: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(scale["status"]["selector"], "app=sprocket");
    assert_eq!(scale["status"]["replicas"], 4);
    // The main resource ignores .status.
    k.ok(
        &[
            "patch",
            "widget",
            "sprocket",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Broken"}}"#,
        ],
        None,
    );
    assert_eq!(
        k.json(&["get", "widget", "sprocket"])["status"]["phase"],
        "Ready"
    );

    // A second `kubectl apply` patches the object with a JSON merge patch (custom resources
    // take no strategic merge patch; kube answers 415 to one).
    let resized = WIDGET.replace("size: 3", "size: 5");
    k.ok(&["apply", "--validate=warn", "-f", "-"], Some(&resized));
    assert_eq!(k.json(&["get", "widget", "sprocket"])["spec"]["size"], 5);

    k.ok(&["delete", "crd", "widgets.example.com"], None);
}

#[test]
fn kubectl_1_27_sees_custom_resources_served_against_their_schema() {
    custom_resources("1.27");
}

#[test]
fn kubectl_1_33_sees_custom_resources_served_against_their_schema() {
    custom_resources("1.33");
}

/// A CRD with CEL rules: a limit on `spec.replicas` with a message, and a transition rule.
const RULED_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gizmos, kind: Gizmo}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas may not exceed maxReplicas"
              fieldPath: .replicas
            properties:
              maxReplicas: {type: integer}
              replicas:
                type: integer
                x-kubernetes-validations:
                - rule: "self >= oldSelf"
"#;

fn gizmo(replicas: u32) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: g\nspec:\n  maxReplicas: 5\n  replicas: {replicas}\n"
    )
}

#[test]
fn kubectl_1_33_sees_cel_rules_refuse_objects_and_decreases() {
    let version = "1.33";
    let path = format!("{KUBECTL_DIR}/kubectl.{version}");
    assert!(std::path::Path::new(&path).exists(), "{path} is missing");
    let server = Server::start();
    let k = Kubectl {
        server: &server,
        version,
    };

    // A rule that does not compile refuses the CRD.
    let broken = RULED_CRD.replace("self >= oldSelf", "self >=");
    let refused = k.fails(&["apply", "-f", "-"], &broken);
    assert!(
        refused.starts_with(
            "The CustomResourceDefinition \"gizmos.example.com\" is invalid: spec.validation.openAPIV3Schema.properties[spec].properties[replicas].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self >=\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:"
        ),
        "{refused}"
    );
    k.ok(&["apply", "-f", "-"], Some(RULED_CRD));
    k.ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/gizmos.example.com",
            "--timeout=30s",
        ],
        None,
    );

    // A rule that fails: kube's message, at the rule's fieldPath.
    let invalid = k.fails(&["apply", "-f", "-"], &gizmo(6));
    assert_eq!(
        invalid,
        "The Gizmo \"g\" is invalid: spec.replicas: Invalid value: \"object\": replicas may not exceed maxReplicas"
    );

    // A transition rule: not on create, then a decrease is refused and an increase passes.
    // A second `kubectl apply` of a custom object sends a JSON merge patch (the OpenAPI v3
    // document lists no strategic merge patch for it, as kube's does not).
    k.ok(&["apply", "-f", "-"], Some(&gizmo(3)));
    k.ok(&["apply", "-f", "-"], Some(&gizmo(4)));
    assert_eq!(k.json(&["get", "gizmo", "g"])["spec"]["replicas"], 4);
    let decreased = k.fails(&["apply", "-f", "-"], &gizmo(2));
    assert!(
        decreased
            .contains("spec.replicas: Invalid value: \"integer\": failed rule: self >= oldSelf"),
        "{decreased}"
    );
    let patch = |replicas: u32| format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#);
    let decreased = k.fails(
        &["patch", "gizmo", "g", "--type=merge", "-p", &patch(2)],
        "",
    );
    assert_eq!(
        decreased,
        "The Gizmo \"g\" is invalid: spec.replicas: Invalid value: \"integer\": failed rule: self >= oldSelf"
    );
    k.ok(
        &["patch", "gizmo", "g", "--type=merge", "-p", &patch(5)],
        None,
    );
    assert_eq!(k.json(&["get", "gizmo", "g"])["spec"]["replicas"], 5);

    k.ok(&["delete", "crd", "gizmos.example.com"], None);
}
