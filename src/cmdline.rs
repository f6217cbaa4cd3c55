//! Command lines as words: the rules `portok run` and the package-script reader share for
//! telling a tool's name, shell syntax, and the words of a command given as one argument.

/// The last path segment: `./node_modules/.bin/vite` is `vite`.
pub fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Shell syntax beyond words separated by spaces.
pub fn shell_syntax(arg: &str) -> bool {
    arg.chars()
        .any(|c| "|&;<>()$`\\\"'*?[]#~=%{}\n".contains(c))
}

/// One argument that needs `sh -c`: shell syntax, or several words.
pub fn needs_shell(arg: &str) -> bool {
    shell_syntax(arg) || arg.contains(' ')
}

/// The words of a command: a command given as one argument (`portok web "npm run dev"`)
/// split at spaces, else the arguments as they are.
pub fn words(command: &[String]) -> Vec<String> {
    match command {
        [one] => one.split_whitespace().map(String::from).collect(),
        many => many.to_vec(),
    }
}

/// Split a shell command (a package script) into words, with '...' and "..." quoting.
pub fn split_shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_shell_syntax() {
        assert_eq!(basename("./node_modules/.bin/vite"), "vite");
        assert!(needs_shell("npm run dev") && !shell_syntax("npm run dev"));
        assert!(shell_syntax("a && b") && !needs_shell("vite"));
        assert_eq!(words(&["npm run dev".into()]), ["npm", "run", "dev"]);
        assert_eq!(
            split_shell_words(r#"cross-env A="x y" vite --open"#),
            ["cross-env", "A=x y", "vite", "--open"]
        );
    }
}
