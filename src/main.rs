use clap::Parser;
use portok::{cli::Cli, cmd};

fn main() {
    let cli = Cli::parse();
    // Short-lived commands die quietly when their output pipe closes (`portok list | head`),
    // like other Unix tools. The daemon and `portok run` keep Rust's default (SIGPIPE
    // ignored): they write to sockets and children's pipes and must survive a closed peer.
    if !matches!(
        cli.command,
        portok::cli::Command::Daemon(_)
            | portok::cli::Command::Run(_)
            | portok::cli::Command::External(_)
    ) {
        portok::default_sigpipe();
    }
    let code = match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cmd::error_text(&err));
            cmd::exit_code(&err)
        }
    };
    std::process::exit(code);
}
