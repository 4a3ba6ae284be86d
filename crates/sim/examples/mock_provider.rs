//! Runs the simulator standalone, the way `tollgate mock-provider --listen ADDR` does:
//!
//! ```text
//! cargo run --example mock_provider -p tollgate-sim -- --listen 127.0.0.1:9000 --ttft-ms 50
//! ```

use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    sim: tollgate_sim::SimConfig,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    eprintln!(
        "simulated provider on http://{addr}: OpenAI /v1, Azure /openai, Anthropic /v1/messages, \
         Gemini /v1beta/models, Bedrock /model"
    );
    tollgate_sim::run(listener, cli.sim, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
