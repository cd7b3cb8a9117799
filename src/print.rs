//! Expressions and literals written back as Nudge source, with the fewest parentheses that keep
//! their meaning. Parsing the printed text gives back an equal tree (a property test checks it).

use std::fmt::{self, Display, Formatter};

use crate::ast::*;
use crate::check::format_number;

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Or(a, b) => write!(f, "{} or {}", Paren(a, 1), Paren(b, 2)),
            ExprKind::And(a, b) => write!(f, "{} and {}", Paren(a, 2), Paren(b, 3)),
            ExprKind::Not(inner) => write!(f, "not {}", Paren(inner, 3)),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::HasTag(tag) => write!(f, "has tag {}", quote(&tag.value)),
            ExprKind::Name(name) => f.write_str(&name.name),
            ExprKind::Did(did) => write!(f, "{did}"),
            ExprKind::Test { subject, test } => {
                match subject {
                    Subject::Attr(attr) => write!(f, "customer.{}", attr.name.name)?,
                    Subject::Property(p) => f.write_str(&p.name)?,
                }
                match test {
                    Some(test) => write!(f, " {}", test.kind),
                    None => Ok(()),
                }
            }
        }
    }
}

/// An operand printed in parentheses when it binds more loosely than its place requires.
/// Levels: 1 `or`, 2 `and`, 3 `not` and atoms.
struct Paren<'a>(&'a Expr, u8);

fn level(expr: &Expr) -> u8 {
    match expr.kind {
        ExprKind::Or(..) => 1,
        ExprKind::And(..) => 2,
        _ => 3,
    }
}

impl Display for Paren<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // A `where` condition runs as far as it can, so a `did … where` inside a larger
        // expression is always parenthesised.
        let open_where = matches!(&self.0.kind, ExprKind::Did(d) if d.filter.is_some());
        if level(self.0) < self.1 || open_where {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Display for Did {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("did ")?;
        if self.negated {
            f.write_str("not ")?;
        }
        f.write_str(&self.event.name)?;
        if let Some(filter) = &self.filter {
            // `where … flag within last 7d` would give the window to the property `flag`.
            if self.window.is_some() && ends_with_bare_name(filter) {
                write!(f, " where ({filter})")?;
            } else {
                write!(f, " where {filter}")?;
            }
        }
        if let Some(count) = &self.count {
            let mode = match count.mode {
                CountMode::AtLeast => "at least",
                CountMode::AtMost => "at most",
                CountMode::Exactly => "exactly",
            };
            let unit = if count.n.value == 1 { "time" } else { "times" };
            write!(f, " {mode} {} {unit}", count.n.value)?;
        }
        if let Some(window) = &self.window {
            write!(f, " {window}")?;
        }
        Ok(())
    }
}

/// Whether the rightmost operand of a condition is a bare name (which a window would attach to).
fn ends_with_bare_name(expr: &Expr) -> bool {
    match &expr.kind {
        ExprKind::Name(_) => true,
        // Mirrors `Paren`: a right operand printed in parentheses ends with `)`.
        ExprKind::Or(_, right) => level(right) >= 2 && ends_with_bare_name(right),
        ExprKind::And(_, right) | ExprKind::Not(right) => {
            level(right) >= 3 && ends_with_bare_name(right)
        }
        _ => false,
    }
}

impl Display for TestKind {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            TestKind::Compare(op, literal) => write!(f, "{} {}", op.symbol(), literal.value),
            TestKind::In { negated, values } => {
                let items: Vec<String> = values.iter().map(|v| v.value.to_string()).collect();
                let not = if *negated { "not " } else { "" };
                write!(f, "{not}in [{}]", items.join(", "))
            }
            TestKind::Contains(literal) => write!(f, "contains {}", literal.value),
            TestKind::IsSet { negated: false } => f.write_str("is set"),
            TestKind::IsSet { negated: true } => f.write_str("is not set"),
            TestKind::Window(window) => write!(f, "{window}"),
        }
    }
}

impl Display for Window {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Window::WithinLast(d) => write!(f, "within last {}", duration(d.seconds)),
            Window::Since(t) => write!(f, "since {}", t.value),
            Window::Between(a, b) => write!(f, "between {} and {}", a.value, b.value),
        }
    }
}

impl Display for Value {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => f.write_str(&quote(t)),
            Value::Number(n) => f.write_str(&format_number(*n)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::DateTime(dt) => write!(f, "{dt}"),
            Value::Duration(s) => f.write_str(&duration(*s)),
            Value::TimeOfDay(t) => write!(f, "{}", t.format("%H:%M")),
        }
    }
}

impl Display for DateTimeValue {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let seconds = if self.local.and_utc().timestamp() % 60 == 0 {
            ""
        } else {
            ":%S"
        };
        match self.offset {
            None => write!(
                f,
                "{}",
                self.local.format(&format!("%Y-%m-%d %H:%M{seconds}"))
            ),
            Some(offset) => {
                let zone = offset.to_string();
                write!(
                    f,
                    "{}{zone}",
                    self.local.format(&format!("%Y-%m-%dT%H:%M{seconds}"))
                )
            }
        }
    }
}

/// Seconds as the largest units that divide them: 5400 → `1h30m`. Weeks only for whole weeks:
/// people write `30d`, not `4w2d`.
pub fn duration(mut seconds: i64) -> String {
    const WEEK: i64 = 604_800;
    if seconds == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", WEEK),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ] {
        if seconds >= size && (size != WEEK || seconds % WEEK == 0) {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// A string literal with the language's escapes.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
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
    fn durations_in_largest_units() {
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(2 * 604_800), "2w");
        assert_eq!(duration(30 * 86_400), "30d");
        assert_eq!(duration(604_800 + 60), "7d1m");
        assert_eq!(duration(45), "45s");
    }

    #[test]
    fn quotes_escape() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}
