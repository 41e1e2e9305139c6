//! Case-insensitive `*` globs for addresses, logins and host names.

/// A pattern where `*` matches any run of characters (including none) and
/// every other character matches itself, ignoring case. `<>` matches only
/// the null sender (an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    source: String,
}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Glob {
        let normalized = if pattern == "<>" { "" } else { pattern };
        Glob {
            pattern: normalized.chars().flat_map(char::to_lowercase).collect(),
            source: pattern.to_string(),
        }
    }

    /// The pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a whole value, ignoring case. Iterative with one backtrack
    /// point, so hostile values cannot make it exponential.
    pub fn matches(&self, value: &str) -> bool {
        let text: Vec<char> = value.chars().flat_map(char::to_lowercase).collect();
        let p = &self.pattern;
        let (mut ti, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == text[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(Glob::new("*@example.com").matches("Bob@EXAMPLE.com"));
        assert!(!Glob::new("*@example.com").matches("bob@example.com.evil"));
        assert!(Glob::new("root@*").matches("root@host"));
        assert!(!Glob::new("root@*").matches("xroot@host"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("<>").matches(""));
        assert!(!Glob::new("<>").matches("a@b"));
        assert!(Glob::new("a*b*c").matches("aXXbYYc"));
        assert!(!Glob::new("a*b*c").matches("aXXbYY"));
        let long = "a".repeat(10_000);
        assert!(!Glob::new("*a*a*a*a*a*b").matches(&long));
    }
}
