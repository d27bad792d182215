fn main() {
    println!("{}", gateway::EBPF_OBJECT.len());
}
