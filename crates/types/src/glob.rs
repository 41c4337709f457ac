//! IAM-style wildcard matching: `*` matches any run of characters (also none), `?` exactly one.

/// Whether `text` matches `pattern`. Iterative with one backtrack point, so it is linear in
/// practice and never recursive (patterns come from users).
pub fn matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("*", "", false));
        assert!(matches("*", "anything/at/all", false));
        assert!(matches("s3:Get*", "s3:GetObject", false));
        assert!(matches("s3:get*", "s3:GetObject", true));
        assert!(!matches("s3:get*", "s3:GetObject", false));
        assert!(matches("arn:aws:s3:::b/*/x?z", "arn:aws:s3:::b/a/b/xyz", false));
        assert!(!matches("arn:aws:s3:::b/*/x?z", "arn:aws:s3:::b/a/b/xz", false));
        assert!(matches("a*b*c", "aXXbYYc", false));
        assert!(!matches("a*b*c", "aXXbYY", false));
        assert!(matches("public/*", "public/", false));
        assert!(!matches("public/*", "public", false));
        assert!(matches("**a", "a", false));
    }
}
