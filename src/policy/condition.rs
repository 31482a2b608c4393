//! Attestation conditions: CEL expressions (through the `cel` crate, cel-rust) over an
//! attestation's predicate, compiled when the config is loaded and evaluated per attestation.
//!
//! CEL is what Kubernetes (`ValidatingAdmissionPolicy`), Kyverno and Sigstore's policy-controller
//! users already write, it has no loops or recursion beyond its list macros, and it always
//! terminates; a home-made language would be one more thing to learn and to get wrong.
//!
//! Two variables are bound:
//! * `predicate`: the statement's `predicate`, as JSON maps, lists, strings, numbers (`int` when
//!   whole, else `double`), booleans and null;
//! * `now`: a CEL timestamp, the time of the decision.
//!
//! **Strings stay strings.** A predicate's dates are JSON strings, and nothing guesses which
//! strings are dates: write CEL's own `timestamp()` (RFC 3339, as the CEL specification says),
//! as in `now - timestamp(predicate.metadata.scanFinishedOn) < duration("168h")`. A string that
//! is not RFC 3339 is then an evaluation error, and so a refusal, rather than a silent `false`.
//!
//! Every evaluation error (a missing field, a type mismatch, a bad timestamp) refuses, and so
//! does a result that is not a boolean: a condition that cannot be evaluated is not met.
//! Evaluation is bounded by what it runs over: only payloads that verified with a trusted
//! authority, at most `verify::attestation::MAX_STATEMENT_BYTES`.

use std::sync::Arc;

use cel::{Context, Env, Program, Value};
use time::OffsetDateTime;

/// The longest condition accepted: conditions are one-liners, and a refusal quotes them.
pub const MAX_CONDITION_CHARS: usize = 4096;

/// The deepest bracket nesting accepted.
pub const MAX_NESTING: usize = 32;
/// The stack a condition is compiled and evaluated on: address space, touched only as used.
/// The parser takes ~64 KiB per bracket level in unoptimised builds.
const CEL_STACK_BYTES: usize = 64 << 20;

/// The deepest nesting of `(`, `[` and `{` in `source`, brackets inside string literals included
/// (which only errs on the strict side).
fn nesting(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A compiled condition and the words it was written in.
pub struct Condition {
    pub source: String,
    program: Program,
    env: Arc<Env>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// The variables a condition may name.
const VARIABLES: [&str; 2] = ["predicate", "now"];

impl Condition {
    /// Compiles `source`. The error is the config problem's message.
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.chars().count() > MAX_CONDITION_CHARS {
            return Err(format!("is longer than {MAX_CONDITION_CHARS} characters"));
        }
        if source.trim().is_empty() {
            return Err("is empty".into());
        }
        // The parser recurses per nesting level, and a stack overflow cannot be caught: bound
        // the nesting before parsing (real conditions nest a handful of levels).
        if nesting(source) > MAX_NESTING {
            return Err(format!("nests brackets more than {MAX_NESTING} deep"));
        }
        let env = Arc::new(Env::stdlib());
        // The parser is recursive descent; bound what it is given above, and catch a panic
        // in it rather than take the config load down with it.
        let compiled = stacker::grow(CEL_STACK_BYTES, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.compile(source)))
        })
        .map_err(|_| "could not be parsed (the CEL parser failed)".to_string())?;
        let program = compiled.map_err(|e| format!("is not valid CEL: {}", one_line(&e.to_string())))?;
        // Macro variables (`x` in `list.all(x, …)`) are bound by the macro; anything else that
        // is not one of ours is a typo such as `predicates`, better found now than at a pull.
        let refs = program.references();
        let bound = macro_variables(source);
        let unknown: Vec<&str> =
            refs.variables().into_iter().filter(|v| !VARIABLES.contains(v) && !bound.contains(v)).collect();
        if !unknown.is_empty() {
            return Err(format!("names {}, but only predicate and now are defined", unknown.join(", ")));
        }
        Ok(Condition { source: source.to_string(), program, env })
    }

    /// Evaluates the condition over `predicate` at `now`: `Ok(true)` met, `Ok(false)` not met,
    /// `Err` with why it could not be evaluated.
    pub fn evaluate(&self, predicate: &serde_json::Value, now: OffsetDateTime) -> Result<bool, String> {
        let mut ctx = Context::with_env(self.env.clone());
        ctx.add_variable_from_value("predicate", from_json(predicate));
        ctx.add_variable_from_value("now", Value::Timestamp(timestamp(now)?));
        let run = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(&ctx)));
        match stacker::grow(CEL_STACK_BYTES, run) {
            Ok(Ok(Value::Bool(b))) => Ok(b),
            Ok(Ok(other)) => Err(format!("it gave {:?}, not a boolean", other.type_of())),
            Ok(Err(e)) => Err(one_line(&e.to_string())),
            Err(_) => Err("evaluation failed (the CEL interpreter panicked)".into()),
        }
    }
}

/// JSON as CEL data. Whole numbers become `int` (`uint` only above `i64::MAX`), so
/// `predicate.summary.critical + predicate.summary.high < 5` works as written; cel's own serde
/// conversion would make every non-negative number a `uint`, which CEL does not add to an `int`.
/// Recursion is bounded by serde_json's nesting limit (128) on the parsed payload.
fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::String(Arc::new(s.clone())),
        J::Array(items) => Value::List(Arc::new(items.iter().map(from_json).collect())),
        J::Object(m) => {
            let map: std::collections::HashMap<cel::objects::Key, Value> =
                m.iter().map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), from_json(v))).collect();
            Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

fn timestamp(t: OffsetDateTime) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    let utc = chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).ok_or("now is out of range")?;
    Ok(utc.fixed_offset())
}

/// The names CEL's comprehension macros bind: the first argument of `all`, `exists`,
/// `exists_one`, `map` and `filter`. Read from the source, which is short.
fn macro_variables(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for m in ["all(", "exists(", "exists_one(", "map(", "filter("] {
        for (at, _) in source.match_indices(m) {
            let rest = &source[at + m.len()..];
            let name = rest.split(',').next().unwrap_or("").trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push(name);
            }
        }
    }
    out
}

/// Keeps a message on one log line.
fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    crate::verify::keys::truncate(&joined.join(" "), 300).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn conditions_see_the_predicate_and_now() {
        let c = Condition::compile(
            "predicate.scanner.result.summary.critical == 0 && \
             now - timestamp(predicate.metadata.scanFinishedOn) < duration(\"168h\")",
        )
        .unwrap();
        let p = json!({"scanner": {"result": {"summary": {"critical": 0}}},
                       "metadata": {"scanFinishedOn": "2026-01-01T00:00:00Z"}});
        assert_eq!(c.evaluate(&p, at("2026-01-03T00:00:00Z")), Ok(true));
        assert_eq!(c.evaluate(&p, at("2026-01-09T00:00:00Z")), Ok(false));
        let p = json!({"scanner": {"result": {"summary": {"critical": 2}}},
                       "metadata": {"scanFinishedOn": "2026-01-01T00:00:00Z"}});
        assert_eq!(c.evaluate(&p, at("2026-01-03T00:00:00Z")), Ok(false));
    }

    #[test]
    fn macros_bind_their_own_variables() {
        let c = Condition::compile("predicate.materials.all(m, m.uri.startsWith(\"git+https://github.com/acme/\"))")
            .unwrap();
        assert_eq!(
            c.evaluate(&json!({"materials": [{"uri": "git+https://github.com/acme/api"}]}), at("2026-01-01T00:00:00Z")),
            Ok(true)
        );
        assert_eq!(
            c.evaluate(&json!({"materials": [{"uri": "git+https://evil.example/x"}]}), at("2026-01-01T00:00:00Z")),
            Ok(false)
        );
    }

    #[test]
    fn bad_conditions_are_config_problems() {
        assert!(Condition::compile("predicate.x ==").unwrap_err().starts_with("is not valid CEL"));
        assert_eq!(
            Condition::compile("predicates.x == 1").unwrap_err(),
            "names predicates, but only predicate and now are defined"
        );
        assert_eq!(Condition::compile("  ").unwrap_err(), "is empty");
        assert!(Condition::compile(&"1 == 1 && ".repeat(1000)).unwrap_err().starts_with("is longer than"));
        let deep = format!("{}true{}", "(".repeat(2000), ")".repeat(2000));
        assert_eq!(Condition::compile(&deep).unwrap_err(), "nests brackets more than 32 deep");
        let ok = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(Condition::compile(&ok).is_ok());
    }

    /// Long chains build deep trees; they compile and evaluate on the condition's own stack,
    /// here from a test thread's 2 MiB one.
    #[test]
    fn the_longest_and_deepest_conditions_neither_overflow_nor_panic() {
        let now = at("2026-01-01T00:00:00Z");
        let sum = format!("{}1 == 1000", "1 + ".repeat(999));
        assert!(sum.len() <= MAX_CONDITION_CHARS);
        assert_eq!(Condition::compile(&sum).unwrap().evaluate(&json!({}), now), Ok(true));
        let members = format!("predicate{} == 1", ".a".repeat(1000));
        assert!(Condition::compile(&members).unwrap().evaluate(&json!({}), now).is_err());
        let negations = format!("{}true", "!".repeat(4000));
        assert_eq!(Condition::compile(&negations).unwrap().evaluate(&json!({}), now), Ok(true));
        let deep = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(Condition::compile(&deep).unwrap().evaluate(&json!({}), now), Ok(true));
    }

    #[test]
    fn evaluation_errors_and_non_booleans_refuse() {
        let now = at("2026-01-01T00:00:00Z");
        let c = Condition::compile("predicate.missing == 1").unwrap();
        assert!(c.evaluate(&json!({}), now).is_err());
        let c = Condition::compile("now - timestamp(predicate.t) < duration(\"1h\")").unwrap();
        assert!(c.evaluate(&json!({"t": "yesterday"}), now).is_err());
        let c = Condition::compile("predicate.n + 1 == 2").unwrap();
        assert_eq!(c.evaluate(&json!({"n": 1}), now), Ok(true));
        let c = Condition::compile("predicate.n + 1").unwrap();
        assert_eq!(c.evaluate(&json!({"n": 1}), now), Err("it gave Int, not a boolean".into()));
    }
}
