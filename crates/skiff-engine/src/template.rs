//! A subset of Go's `text/template`, enough for `docker inspect --format`: text, `{{.Path}}`,
//! `{{json .Path}}`, `{{join .Path "sep"}}`, `{{upper|lower .Path}}` and
//! `{{range .Path}}...{{end}}`, evaluated over a JSON value and printed as Go prints the
//! values (`[a b]` for lists, `map[k:v]` for objects, `<nil>` for null).

use serde_json::Value;

use crate::EngineError;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Vec<String>),
    Range(Vec<String>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

fn bad(detail: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(format!("template: {}", detail.into()))
}

/// Splits an action into words, keeping quoted strings whole (quotes removed).
fn words(action: &str) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some(other) => word.push(other),
                        None => return Err(bad("unterminated string")),
                    },
                    Some(other) => word.push(other),
                    None => return Err(bad("unterminated string")),
                }
            }
            out.push(format!("\"{word}"));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, EngineError> {
        let mut stack: Vec<(Vec<String>, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| bad("unclosed action"))?;
            let inner = after[..close]
                .trim()
                .trim_start_matches('-')
                .trim_end_matches('-');
            let parts = words(inner.trim())?;
            match parts.first().map(String::as_str) {
                Some("range") => {
                    stack.push((parts[1..].to_vec(), std::mem::take(&mut nodes)));
                }
                Some("end") => {
                    let (expr, outer) = stack.pop().ok_or_else(|| bad("unexpected {{end}}"))?;
                    let body = std::mem::replace(&mut nodes, outer);
                    nodes.push(Node::Range(expr, body));
                }
                Some(_) => nodes.push(Node::Action(parts)),
                None => return Err(bad("empty action")),
            }
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            nodes.push(Node::Text(rest.to_string()));
        }
        if !stack.is_empty() {
            return Err(bad("missing {{end}}"));
        }
        Ok(Template { nodes })
    }

    /// Renders the template over `data`.
    pub fn render(&self, data: &Value) -> Result<String, EngineError> {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), EngineError> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(words) => out.push_str(&eval(words, dot)?),
            Node::Range(expr, body) => {
                let value = arg(expr.first().ok_or_else(|| bad("range of nothing"))?, dot)?;
                match value {
                    Value::Array(items) => {
                        for item in &items {
                            render_nodes(body, item, out)?;
                        }
                    }
                    Value::Object(map) => {
                        for item in map.values() {
                            render_nodes(body, item, out)?;
                        }
                    }
                    Value::Null => {}
                    other => return Err(bad(format!("range can't iterate over {other}"))),
                }
            }
        }
    }
    Ok(())
}

/// Looks up `.A.B` in `dot`, or a quoted string literal.
fn arg(word: &str, dot: &Value) -> Result<Value, EngineError> {
    if let Some(literal) = word.strip_prefix('"') {
        return Ok(Value::String(literal.to_string()));
    }
    if word == "." {
        return Ok(dot.clone());
    }
    let path = word
        .strip_prefix('.')
        .ok_or_else(|| bad(format!("function {word:?} not defined")))?;
    let mut value = dot;
    for field in path.split('.') {
        value = match value {
            Value::Object(map) => map
                .get(field)
                .ok_or_else(|| bad(format!("can't evaluate field {field}")))?,
            _ => return Err(bad(format!("can't evaluate field {field}"))),
        };
    }
    Ok(value.clone())
}

fn eval(words: &[String], dot: &Value) -> Result<String, EngineError> {
    let need = |i: usize| {
        words
            .get(i)
            .ok_or_else(|| bad(format!("{} needs an argument", words[0])))
    };
    match words[0].as_str() {
        "json" => {
            let value = arg(need(1)?, dot)?;
            serde_json::to_string(&value).map_err(|e| bad(e.to_string()))
        }
        "join" => {
            let value = arg(need(1)?, dot)?;
            let sep = arg(need(2)?, dot)?;
            let sep = sep.as_str().unwrap_or_default().to_string();
            let items: Vec<String> = match value {
                Value::Array(items) => items.iter().map(go_print).collect(),
                Value::Null => vec![],
                other => vec![go_print(&other)],
            };
            Ok(items.join(&sep))
        }
        "upper" => Ok(go_print(&arg(need(1)?, dot)?).to_uppercase()),
        "lower" => Ok(go_print(&arg(need(1)?, dot)?).to_lowercase()),
        "println" => Ok(format!("{}\n", go_print(&arg(need(1)?, dot)?))),
        word if words.len() == 1 => Ok(go_print(&arg(word, dot)?)),
        word => Err(bad(format!("function {word:?} not defined"))),
    }
}

/// Prints a value as Go's `fmt` prints the decoded field.
pub fn go_print(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_print).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, data: &Value) -> String {
        Template::parse(template).unwrap().render(data).unwrap()
    }

    #[test]
    fn fields_print_as_go_prints_them() {
        let data = json!({"State": {"Pid": 42, "Running": true, "Status": "running"},
                          "Config": {"Env": ["A=1", "B=2"], "Labels": {"k": "v"}}, "X": null});
        assert_eq!(render("{{.State.Pid}}", &data), "42");
        assert_eq!(
            render("pid={{.State.Pid}} {{.State.Status}}", &data),
            "pid=42 running"
        );
        assert_eq!(render("{{.Config.Env}}", &data), "[A=1 B=2]");
        assert_eq!(render("{{.Config.Labels}}", &data), "map[k:v]");
        assert_eq!(render("{{.X}}", &data), "<nil>");
        assert_eq!(render("{{ .State.Running }}", &data), "true");
        assert_eq!(render("{{json .Config.Env}}", &data), r#"["A=1","B=2"]"#);
        assert_eq!(render(r#"{{join .Config.Env ","}}"#, &data), "A=1,B=2");
        assert_eq!(
            render("{{range .Config.Env}}<{{.}}>{{end}}", &data),
            "<A=1><B=2>"
        );
    }

    #[test]
    fn errors_are_reported() {
        let data = json!({"A": 1});
        assert!(Template::parse("{{.A").is_err());
        assert!(Template::parse("{{range .A}}").is_err());
        assert!(Template::parse("{{.Nope}}").unwrap().render(&data).is_err());
        assert!(
            Template::parse("{{frob .A}}")
                .unwrap()
                .render(&data)
                .is_err()
        );
    }
}
