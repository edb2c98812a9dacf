//! Docker's `--format` for listings (`ps`, `stats`): `table` (the default columns), `table
//! TEMPLATE` (a header row made from the same template over the column titles, then one row
//! per item, laid out as Go's tabwriter does at `\t`), `json` (one JSON object per line) or a
//! bare Go template per item. `\t` and `\n` written as two characters become a tab and a
//! newline, as in Docker.

use serde_json::{Map, Value};
use skiff_engine::EngineError;
use skiff_engine::template::Template;

use super::table;

/// A parsed `--format`.
#[derive(Debug, Clone)]
pub enum ListFormat {
    /// A header row, then a row per item, in aligned columns.
    Table(Template),
    /// Each item through the template, one per line.
    Raw(Template),
}

impl ListFormat {
    /// Parses `format` (none: the table of `default_table`, itself `table {{.A}}\t{{.B}}`).
    pub fn parse(format: Option<&str>, default_table: &str) -> Result<ListFormat, EngineError> {
        let text = match format.map(str::trim) {
            None | Some("") | Some("table") => default_table,
            Some("json") => "{{json .}}",
            Some(text) => text,
        };
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let template = Template::parse(&body)?;
        Ok(if table {
            ListFormat::Table(template)
        } else {
            ListFormat::Raw(template)
        })
    }

    /// Renders `items`; `headers` titles each field of an item (`{"ID": "CONTAINER ID"}`).
    pub fn render(&self, headers: &[(&str, &str)], items: &[Value]) -> Result<String, EngineError> {
        match self {
            ListFormat::Raw(template) => {
                let mut out = String::new();
                for item in items {
                    out.push_str(&template.render(item)?);
                    out.push('\n');
                }
                Ok(out)
            }
            ListFormat::Table(template) => {
                let titles: Map<String, Value> = headers
                    .iter()
                    .map(|(field, title)| (field.to_string(), Value::String(title.to_string())))
                    .collect();
                let mut rows = Vec::new();
                for item in std::iter::once(&Value::Object(titles)).chain(items) {
                    let text = template.render(item)?;
                    for line in text.split('\n') {
                        rows.push(line.split('\t').map(str::to_string).collect());
                    }
                }
                Ok(table::render(&rows))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEADERS: &[(&str, &str)] = &[("ID", "CONTAINER ID"), ("Name", "NAME")];

    #[test]
    fn table_formats_have_a_header_from_the_titles() {
        let items = [json!({"ID": "0123456789ab", "Name": "web"})];
        let format = ListFormat::parse(Some("table {{.Name}}\\t{{.ID}}"), "").unwrap();
        assert_eq!(
            format.render(HEADERS, &items).unwrap(),
            "NAME      CONTAINER ID\nweb       0123456789ab\n"
        );
        let default = ListFormat::parse(Some("table"), "table {{.ID}}\t{{.Name}}").unwrap();
        assert_eq!(
            default.render(HEADERS, &items).unwrap(),
            "CONTAINER ID   NAME\n0123456789ab   web\n"
        );
        // The header alone when there is nothing to list.
        assert_eq!(
            default.render(HEADERS, &[]).unwrap(),
            "CONTAINER ID   NAME\n"
        );
    }

    #[test]
    fn bare_and_json_formats_print_a_line_per_item() {
        let items = [
            json!({"ID": "a", "Name": "b"}),
            json!({"ID": "c", "Name": "d"}),
        ];
        let format = ListFormat::parse(Some("{{.Name}}: {{.ID}}"), "").unwrap();
        assert_eq!(format.render(HEADERS, &items).unwrap(), "b: a\nd: c\n");
        let json = ListFormat::parse(Some("json"), "").unwrap();
        assert_eq!(
            json.render(HEADERS, &items[..1]).unwrap(),
            "{\"ID\":\"a\",\"Name\":\"b\"}\n"
        );
    }
}
