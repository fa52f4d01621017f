//! Prints the README's command table, generated from `src/commands.rs`.
//! `make readme-table` splices it into README.md; `tests/commands.rs` checks they agree.
fn main() {
    print!("{}", rustproxy::commands::markdown_table());
}
