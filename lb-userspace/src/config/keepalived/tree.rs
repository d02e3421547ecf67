//! Tokens to statements: a keyword and its values on one line, optionally followed by a block,
//! whose `{` may also start the next line (keepalived accepts both). Unbalanced braces are
//! reported where they are, and parsing goes on.

use super::super::model::Location;
use super::Diags;
use super::reader::{Tok, Token};

/// A word of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Word {
    pub text: String,
    pub at: Location,
    /// Written in double quotes: never a keyword.
    pub quoted: bool,
}

/// A keyword, its values and its block, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stmt {
    /// At least one: the keyword.
    pub words: Vec<Word>,
    pub block: Option<Block>,
}

impl Stmt {
    pub fn keyword(&self) -> &Word {
        &self.words[0]
    }

    /// The keyword's text; a quoted first word never names a keyword.
    pub fn name(&self) -> &str {
        let keyword = self.keyword();
        if keyword.quoted { "" } else { &keyword.text }
    }

    pub fn at(&self) -> Location {
        self.keyword().at
    }

    pub fn values(&self) -> &[Word] {
        &self.words[1..]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    /// Where its `{` is.
    pub open: Location,
    pub stmts: Vec<Stmt>,
}

/// The top-level statements of `tokens`.
pub(super) fn parse(tokens: Vec<Token>, diags: &mut Diags) -> Vec<Stmt> {
    let mut parser = Parser { tokens: tokens.into_iter().peekable(), diags };
    parser.items(0).0
}

struct Parser<'d, I: Iterator<Item = Token>> {
    tokens: std::iter::Peekable<I>,
    diags: &'d mut Diags,
}

impl<I: Iterator<Item = Token>> Parser<'_, I> {
    /// The statements up to the `}` closing the block at `depth` (0: the top level, which has
    /// none), and whether that `}` was found.
    fn items(&mut self, depth: usize) -> (Vec<Stmt>, bool) {
        let mut stmts: Vec<Stmt> = Vec::new();
        // Whether a `{` starting the next line opens the last statement's block.
        let mut awaits_block = false;
        while let Some(token) = self.tokens.next() {
            match token.kind {
                Tok::Eol => {}
                Tok::Close if depth == 0 => {
                    self.diags.error(token.at, "unbalanced `}`: there is no open block to close");
                    awaits_block = false;
                }
                Tok::Close => return (stmts, true),
                Tok::Open => {
                    let block = self.block(token.at, depth);
                    match stmts.last_mut() {
                        Some(last) if awaits_block => last.block = Some(block),
                        _ => self.diags.error(
                            token.at,
                            "`{` without a keyword: a block follows the keyword it belongs to, on \
                             its line or the next",
                        ),
                    }
                    awaits_block = false;
                }
                Tok::Word { text, quoted } => {
                    let mut words = vec![Word { text, at: token.at, quoted }];
                    while let Some(Token { kind: Tok::Word { text, quoted }, at }) =
                        self.tokens.next_if(|t| matches!(t.kind, Tok::Word { .. }))
                    {
                        words.push(Word { text, at, quoted });
                    }
                    let block = match self.tokens.next_if(|t| t.kind == Tok::Open) {
                        Some(open) => Some(self.block(open.at, depth)),
                        None => None,
                    };
                    awaits_block = block.is_none();
                    stmts.push(Stmt { words, block });
                }
            }
        }
        (stmts, false)
    }

    fn block(&mut self, open: Location, depth: usize) -> Block {
        let (stmts, closed) = self.items(depth + 1);
        if !closed {
            self.diags.error(open, "unbalanced `{`: this block is never closed (a `}` is missing)");
        }
        Block { open, stmts }
    }
}
