//! Creates Kafka topics for the benchmarks (`scripts/bench-kafka`):
//! `kafka-topics BROKERS PARTITIONS TOPIC...`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, partitions, topics @ ..] = args.as_slice() else {
        eprintln!("usage: kafka-topics BROKERS PARTITIONS TOPIC...");
        std::process::exit(2);
    };
    let Ok(partitions) = partitions.parse::<i32>() else {
        eprintln!("kafka-topics: PARTITIONS must be a number, not {partitions:?}");
        std::process::exit(2);
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    waio_tests::kafka::create_topics(brokers, &names, partitions);
}
