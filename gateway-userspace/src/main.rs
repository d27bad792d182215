fn main() -> anyhow::Result<()> {
    let mut dataplane = gateway::dataplane::Dataplane::load()?;
    let _ = dataplane.program()?;
    println!("loaded; counters: {}", dataplane.counters()?.len());
    Ok(())
}
