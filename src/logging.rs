//! The process log on stderr (`log_format`): `text` for people and for
//! logfmt parsers, `json` for collectors. The audit trail is a separate
//! stream (`audit.rs`).
//!
//! Text is one line per event: time, level, target, then logfmt
//! `msg=… key=value` pairs. A value is quoted (with `\"`, `\\`, control
//! characters and Unicode line separators escaped) whenever it holds a
//! space, `=`, a quote or such a character. The message is a value like any
//! other, so a hostile upstream's error text inside it can neither break a
//! line nor forge a field (`level=ERROR` in a message stays inside its quotes).
//! Colour only for a person at a terminal, and never with `NO_COLOR` set.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

use crate::config::LogFormat;

/// Installs the global subscriber; `SIGMIRROR_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGMIRROR_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.fmt_fields(Logfmt).with_ansi(colour()).try_init(),
    };
}

/// A terminal, and `NO_COLOR` unset or empty (<https://no-color.org>).
fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Formats an event's fields as `msg=… key=value …`.
pub struct Logfmt;

impl<'w> FormatFields<'w> for Logfmt {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Fields::default();
        fields.record(&mut v);
        let mut out = v.message.map(|m| format!("msg={}", logfmt_value(&m))).unwrap_or_default();
        if !out.is_empty() && !v.fields.is_empty() {
            out.push(' ');
        }
        out.push_str(&v.fields);
        writer.write_str(&out)
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: String,
}

impl Fields {
    fn push(&mut self, name: &str, value: &str) {
        if name == "message" {
            self.message = Some(value.to_string());
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{name}={}", logfmt_value(value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field.name(), &format!("{value:?}"));
    }
}

/// `value` as is when it is one plain token, else quoted and escaped.
pub fn logfmt_value(value: &str) -> String {
    let plain =
        !value.is_empty() && value.chars().all(|c| !(c.is_whitespace() || c.is_control() || c == '"' || c == '='));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_bare_and_the_rest_is_quoted_and_escaped() {
        assert_eq!(logfmt_value("registry.test"), "registry.test");
        assert_eq!(logfmt_value("127.0.0.1:5050"), "127.0.0.1:5050");
        assert_eq!(logfmt_value(""), "\"\"");
        assert_eq!(logfmt_value("two words"), "\"two words\"");
        assert_eq!(logfmt_value("a=b"), "\"a=b\"");
        assert_eq!(logfmt_value("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(logfmt_value("line\nforged=field"), "\"line\\nforged=field\"");
    }

    #[test]
    fn a_message_can_neither_break_its_line_nor_forge_a_field() {
        assert_eq!(logfmt_value("upstream said\nlevel=ERROR x"), "\"upstream said\\nlevel=ERROR x\"");
        assert_eq!(logfmt_value("a\u{2028}b"), "\"a\\u{2028}b\"");
    }

    #[test]
    fn an_event_is_the_message_then_its_fields_whatever_order_they_were_given_in() {
        // Through a real subscriber into a buffer, so the visitor is what
        // tracing drives, not a hand-made call.
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(Logfmt)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(policies = 2, registry = "a b", "listening on\nhttp://x level=ERROR");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text.trim(), "INFO msg=\"listening on\\nhttp://x level=ERROR\" policies=2 registry=\"a b\"");
        assert_eq!(text.lines().count(), 1, "{text:?}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
