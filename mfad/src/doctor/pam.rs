//! The PAM stacks under `/etc/pam.d`, as Linux-PAM reads them: one rule a
//! line (`TYPE CONTROL MODULE ARGS`), `\` continues a line, `#` starts a
//! comment, `[...]` groups a control or an argument holding spaces, a `-`
//! before the type tolerates a missing module; `@include FILE` (Debian) and
//! `TYPE include|substack FILE` pull in another file's rules.

use std::collections::BTreeSet;

/// How deep includes may nest before doctor stops following them (PAM's
/// own limit is about as deep).
const MAX_DEPTH: usize = 16;

/// A rule's control: a keyword, or `[value=action ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Keyword(String),
    Brackets(Vec<(String, String)>),
}

impl Control {
    fn parse(token: &str) -> Control {
        match token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) => Control::Brackets(
                inner
                    .split_whitespace()
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(v, a)| (v.to_ascii_lowercase(), a.to_ascii_lowercase()))
                    .collect(),
            ),
            None => Control::Keyword(token.to_ascii_lowercase()),
        }
    }

    /// The action for a module's return `value`: its own entry, else
    /// `default`, else `bad` (Linux-PAM's treatment of an unset action).
    fn action(pairs: &[(String, String)], value: &str) -> String {
        let find = |key: &str| pairs.iter().find(|(v, _)| v == key).map(|(_, a)| a.clone());
        find(value).or_else(|| find("default")).unwrap_or_else(|| "bad".to_owned())
    }

    /// When a success of this rule skips the rules after it: how, in words.
    pub fn success_skips(&self) -> Option<String> {
        match self {
            Control::Keyword(k) if k == "sufficient" => Some("`sufficient`".to_owned()),
            Control::Keyword(_) => None,
            Control::Brackets(pairs) => {
                let action = Self::action(pairs, "success");
                if action == "done" {
                    Some("`success=done`".to_owned())
                } else if action.parse::<u32>().is_ok_and(|n| n > 0) {
                    Some(format!("`success={action}` (jumps over the next {action} rules)"))
                } else {
                    None
                }
            }
        }
    }

    /// True when a wrong code (PAM_AUTH_ERR) does not fail the stack.
    pub fn ignores_failure(&self) -> bool {
        match self {
            Control::Keyword(k) => k == "optional",
            Control::Brackets(pairs) => matches!(Self::action(pairs, "auth_err").as_str(), "ignore" | "reset"),
        }
    }

    /// As written in a stack file.
    pub fn text(&self) -> String {
        match self {
            Control::Keyword(k) => k.clone(),
            Control::Brackets(pairs) => {
                let inner: Vec<String> = pairs.iter().map(|(v, a)| format!("{v}={a}")).collect();
                format!("[{}]", inner.join(" "))
            }
        }
    }
}

/// One rule of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The file under /etc/pam.d it is written in (an include's, maybe).
    pub file: String,
    /// Its line number there (the first line of a continued line).
    pub line: usize,
    /// `auth`, `account`, `password` or `session` (without a leading `-`).
    pub kind: String,
    pub control: Control,
    pub module: String,
    pub args: Vec<String>,
}

impl Rule {
    /// True for a rule calling this project's module.
    pub fn is_pam_mfa(&self) -> bool {
        let base = self.module.rsplit('/').next().unwrap_or(&self.module);
        base == "pam_mfa.so" || base == "pam_mfa"
    }

    pub fn has_arg(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    /// The value of `name=VALUE` among the arguments.
    pub fn arg_value(&self, name: &str) -> Option<&str> {
        self.args.iter().find_map(|a| a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }

    /// `FILE:LINE`, to point the administrator at it.
    pub fn place(&self) -> String {
        format!("/etc/pam.d/{}:{}", self.file, self.line)
    }
}

/// One line of a stack file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Rule(Rule),
    /// `@include FILE` (every type: `kind` None) or `TYPE include|substack FILE`.
    Include {
        kind: Option<String>,
        target: String,
        line: usize,
    },
}

/// The lines of a file joined where a `\` continues them, comments cut,
/// each with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (first, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                current = Some((first, acc));
            }
            None => {
                acc.push_str(raw);
                out.push((first, acc));
            }
        }
    }
    out.extend(current);
    out.into_iter()
        .map(|(n, l)| (n, l.split('#').next().unwrap_or("").trim().to_owned()))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// Split on white space, keeping `[...]` (which may hold spaces) as one token.
fn tokens(line: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for word in line.split_whitespace() {
        match out.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            _ => out.push(word.to_owned()),
        }
        if word.starts_with('[') && !open {
            open = !word.contains(']');
        } else if open && word.contains(']') {
            open = false;
        }
    }
    out
}

/// The entries of the stack file `file` (its name under /etc/pam.d).
pub fn parse(file: &str, text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (line, content) in logical_lines(text) {
        let words = tokens(&content);
        let Some(first) = words.first() else { continue };
        if first == "@include" {
            if let Some(target) = words.get(1) {
                entries.push(Entry::Include { kind: None, target: target.clone(), line });
            }
            continue;
        }
        let (Some(control), Some(module)) = (words.get(1), words.get(2)) else { continue };
        let kind = first.trim_start_matches('-').to_ascii_lowercase();
        let control = Control::parse(control);
        if matches!(&control, Control::Keyword(k) if k == "include" || k == "substack") {
            entries.push(Entry::Include { kind: Some(kind), target: module.clone(), line });
            continue;
        }
        let args = words.get(3..).map(<[String]>::to_vec).unwrap_or_default();
        entries.push(Entry::Rule(Rule { file: file.to_owned(), line, kind, control, module: module.clone(), args }));
    }
    entries
}

/// A service's `auth` rules with every include followed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stack {
    pub service: String,
    pub auth: Vec<Rule>,
    /// Includes that could not be followed (missing file, a loop, too deep).
    pub broken_includes: Vec<String>,
}

impl Stack {
    pub fn mfa_rules(&self) -> impl Iterator<Item = &Rule> {
        self.auth.iter().filter(|r| r.is_pam_mfa())
    }
}

/// The `auth` rules of `service`, reading stack files by name with `read`;
/// None when the service has no file.
pub fn load_stack(service: &str, read: &dyn Fn(&str) -> Option<String>) -> Option<Stack> {
    let text = read(service)?;
    let mut stack = Stack { service: service.to_owned(), ..Stack::default() };
    let mut seen = BTreeSet::from([service.to_owned()]);
    follow(service, &text, read, &mut seen, 0, &mut stack);
    Some(stack)
}

/// Add the `auth` rules of `file` to `stack`, following its includes that
/// bring `auth` rules.
fn follow(
    file: &str,
    text: &str,
    read: &dyn Fn(&str) -> Option<String>,
    seen: &mut BTreeSet<String>,
    depth: usize,
    stack: &mut Stack,
) {
    for entry in parse(file, text) {
        match entry {
            Entry::Rule(rule) => {
                if rule.kind == "auth" {
                    stack.auth.push(rule);
                }
            }
            Entry::Include { kind: inc_kind, target, line } => {
                if inc_kind.is_some_and(|k| k != "auth") {
                    continue;
                }
                let name = target.rsplit('/').next().unwrap_or(&target).to_owned();
                let place = format!("/etc/pam.d/{file}:{line}");
                if depth >= MAX_DEPTH || !seen.insert(name.clone()) {
                    stack.broken_includes.push(format!("{place}: `{target}` is included again (a loop)"));
                    continue;
                }
                match read(&name) {
                    Some(inner) => follow(&name, &inner, read, seen, depth + 1, stack),
                    None => stack.broken_includes.push(format!("{place}: `{target}` does not exist")),
                }
                seen.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn reader(files: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn parses_rules_brackets_continuations_and_comments() {
        let text = "# comment\n\
                    auth [success=1 default=ignore] pam_unix.so nullok # tail\n\
                    -auth  optional pam_gnome_keyring.so\n\
                    auth required /lib/security/pam_mfa.so \\\n  failmode=safe [arg with space]\n\
                    account required pam_permit.so\n";
        let entries = parse("svc", text);
        let rules: Vec<&Rule> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Rule(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[0].control,
            Control::Brackets(vec![("success".into(), "1".into()), ("default".into(), "ignore".into())])
        );
        assert_eq!(rules[0].args, vec!["nullok"]);
        assert_eq!(rules[1].kind, "auth");
        assert!(rules[2].is_pam_mfa());
        assert_eq!(rules[2].line, 4);
        assert_eq!(rules[2].args, vec!["failmode=safe", "[arg with space]"]);
        assert_eq!(rules[2].arg_value("failmode"), Some("safe"));
        assert_eq!(rules[3].kind, "account");
    }

    #[test]
    fn includes_are_followed_for_auth_only() {
        let read = reader(&[
            ("sshd", "@include common-auth\naccount include common-account\nauth substack extra\n"),
            ("common-auth", "auth required pam_unix.so\nsession required pam_x.so\nauth required pam_mfa.so\n"),
            ("common-account", "auth required pam_not_reached.so\n"),
            ("extra", "auth sufficient pam_mfa.so forward_pass\n"),
        ]);
        let stack = load_stack("sshd", &read).unwrap();
        let modules: Vec<&str> = stack.auth.iter().map(|r| r.module.as_str()).collect();
        assert_eq!(modules, vec!["pam_unix.so", "pam_mfa.so", "pam_mfa.so"]);
        assert_eq!(stack.auth[1].place(), "/etc/pam.d/common-auth:3");
        assert!(stack.auth[2].has_arg("forward_pass"));
        assert!(stack.broken_includes.is_empty());
        assert!(load_stack("nothing", &read).is_none());
    }

    #[test]
    fn loops_and_missing_includes_are_reported_not_followed() {
        let read = reader(&[("a", "@include b\n@include gone\n"), ("b", "@include a\nauth required pam_mfa.so\n")]);
        let stack = load_stack("a", &read).unwrap();
        assert_eq!(stack.auth.len(), 1);
        assert_eq!(stack.broken_includes.len(), 2, "{:?}", stack.broken_includes);
    }

    #[test]
    fn controls_that_skip_or_ignore() {
        let skip = |t: &str| Control::parse(t).success_skips().is_some();
        assert!(skip("sufficient"));
        assert!(skip("[success=done default=die]"));
        assert!(skip("[success=2 default=ignore]"));
        assert!(!skip("required"));
        assert!(!skip("requisite"));
        assert!(!skip("[success=ok new_authtok_reqd=ok ignore=ignore default=bad]"));
        let ignores = |t: &str| Control::parse(t).ignores_failure();
        assert!(ignores("optional"));
        assert!(ignores("[success=ok default=ignore]"));
        assert!(!ignores("[success=ok auth_err=die default=ignore]"));
        assert!(!ignores("[success=ok]"));
        assert!(!ignores("required"));
        assert_eq!(Control::parse("[success=1 default=ignore]").text(), "[success=1 default=ignore]");
    }
}
