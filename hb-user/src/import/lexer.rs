//! keepalived.conf's syntax: words and quoted strings, `{` `}`, comments from a
//! `!` or `#` at the start of a word, one directive a line. The parser builds a
//! generic tree (name, args, children, line) that knows no directive.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Word(String),
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    /// 1-based.
    pub line: usize,
}

/// One directive: its words on one line, and the block that follows it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub args: Vec<String>,
    pub children: Option<Vec<Node>>,
    pub line: usize,
}

impl Node {
    /// The block's directives; none when it has no block.
    pub fn kids(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }

    /// The line as written (without comments and quotes).
    pub fn text(&self) -> String {
        let mut words = vec![self.name.as_str()];
        words.extend(self.args.iter().map(String::as_str));
        words.join(" ")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub msg: String,
}

pub fn lex(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        lex_line(l, i + 1, &mut out);
    }
    out
}

fn lex_line(l: &str, line: usize, out: &mut Vec<Token>) {
    let mut chars = l.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' | '#' => return,
            '{' | '}' => {
                chars.next();
                let tok = if c == '{' { Tok::Open } else { Tok::Close };
                out.push(Token { tok, line });
            }
            '"' => {
                chars.next();
                // An unterminated quote runs to the end of the line; `\"` is a quote.
                let mut w = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if chars.peek() == Some(&'"') => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
                out.push(Token {
                    tok: Tok::Word(w),
                    line,
                });
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '{' || c == '}' || c == '"' {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Token {
                    tok: Tok::Word(w),
                    line,
                });
            }
        }
    }
}

const MAX_DEPTH: usize = 64;

/// The tree of `tokens`. Iterative, so that deep nesting cannot overflow the stack.
pub fn parse(tokens: &[Token]) -> Result<Vec<Node>, SyntaxError> {
    let mut current: Vec<Node> = Vec::new();
    // The blocks being read: their owner and the list it belongs to.
    let mut open: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut i = 0;
    while let Some(t) = tokens.get(i) {
        i += 1;
        match &t.tok {
            Tok::Word(w) => {
                let mut node = Node {
                    name: w.clone(),
                    args: Vec::new(),
                    children: None,
                    line: t.line,
                };
                while let Some(Token {
                    tok: Tok::Word(a),
                    line,
                }) = tokens.get(i)
                {
                    if *line != t.line {
                        break;
                    }
                    node.args.push(a.clone());
                    i += 1;
                }
                current.push(node);
            }
            Tok::Open => {
                // The block belongs to the directive before it, even on an earlier line.
                let owner = match current.pop() {
                    Some(n) if n.children.is_none() => n,
                    _ => {
                        return Err(SyntaxError {
                            line: t.line,
                            msg: "'{' without a directive name before it".into(),
                        })
                    }
                };
                // Dropping a deep tree recurses too: keepalived itself nests a few levels.
                if open.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        line: t.line,
                        msg: format!("blocks nested deeper than {MAX_DEPTH}"),
                    });
                }
                open.push((owner, std::mem::take(&mut current)));
            }
            Tok::Close => {
                let Some((mut owner, parent)) = open.pop() else {
                    return Err(SyntaxError {
                        line: t.line,
                        msg: "unbalanced '}': no block is open".into(),
                    });
                };
                owner.children = Some(std::mem::replace(&mut current, parent));
                current.push(owner);
            }
        }
    }
    match open.last() {
        Some((owner, _)) => Err(SyntaxError {
            line: owner.line,
            msg: format!(
                "unbalanced '{{': the block of {} is never closed",
                owner.name
            ),
        }),
        None => Ok(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(s: &str) -> Result<Vec<Node>, SyntaxError> {
        parse(&lex(s))
    }

    #[test]
    fn words_quotes_comments_lines() {
        let t = lex("a \"b c\" # x\n! y\n  d{e}f");
        let words: Vec<_> = t.iter().map(|t| (t.tok.clone(), t.line)).collect();
        assert_eq!(
            words,
            vec![
                (Tok::Word("a".into()), 1),
                (Tok::Word("b c".into()), 1),
                (Tok::Word("d".into()), 3),
                (Tok::Open, 3),
                (Tok::Word("e".into()), 3),
                (Tok::Close, 3),
                (Tok::Word("f".into()), 3),
            ]
        );
    }

    #[test]
    fn blocks_nest_and_one_line_blocks() {
        let t = tree("x 1 {\n  group { A B }\n  y\n}\nz").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].args, vec!["1"]);
        let g = &t[0].kids()[0];
        assert_eq!(g.name, "group");
        assert_eq!(g.kids()[0].text(), "A B");
        assert_eq!(t[0].kids()[1].line, 3);
        assert_eq!(t[1].name, "z");
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        assert_eq!(tree("a {\n b {\n }\n").unwrap_err().line, 1);
        assert_eq!(tree("a {\n}\n}\n").unwrap_err().line, 3);
        assert_eq!(tree("{\n}").unwrap_err().line, 1);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let s = "a {".repeat(100_000) + &"}".repeat(100_000);
        assert!(tree(&s).unwrap_err().msg.contains("nested"));
    }
}
