//! Tokens to statements: a keyword and its values on one line, optionally followed by a block,
//! whose `{` may also start the next line (keepalived accepts both). Unbalanced braces are
//! reported where they are, and parsing goes on. Blocks nest at most [`MAX_BLOCK_DEPTH`] deep:
//! parsing recurses into each, and a deeper block is an error, not a stack overflow.

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

/// How deep blocks may nest. keepalived's deepest (a checker's `url` in a `real_server` of a
/// `virtual_server`) is 3 levels down.
pub(super) const MAX_BLOCK_DEPTH: usize = 32;

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
                        Some(last) if awaits_block => last.block = block,
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
                    let open = self.tokens.next_if(|t| t.kind == Tok::Open).map(|t| t.at);
                    awaits_block = open.is_none();
                    let block = open.and_then(|open| self.block(open, depth));
                    stmts.push(Stmt { words, block });
                }
            }
        }
        (stmts, false)
    }

    /// The block whose `{` is at `open`, inside `depth` blocks; none when it is too deep.
    fn block(&mut self, open: Location, depth: usize) -> Option<Block> {
        if depth >= MAX_BLOCK_DEPTH {
            self.diags.error(
                open,
                format!(
                    "blocks are nested more than {MAX_BLOCK_DEPTH} deep here: this block and \
                     what it holds are not read"
                ),
            );
            self.skip_block(open);
            return None;
        }
        let (stmts, closed) = self.items(depth + 1);
        if !closed {
            self.unclosed(open);
        }
        Some(Block { open, stmts })
    }

    /// Skips the tokens up to the `}` closing the block opened at `open`, counting (not
    /// recursing into) the blocks inside.
    fn skip_block(&mut self, open: Location) {
        let mut depth = 1usize;
        for token in self.tokens.by_ref() {
            match token.kind {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                return;
            }
        }
        self.unclosed(open);
    }

    fn unclosed(&mut self, open: Location) {
        self.diags.error(open, "unbalanced `{`: this block is never closed (a `}` is missing)");
    }
}
