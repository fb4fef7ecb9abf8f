fn main() {
    let s = schemars::schema_for!(galley_blueprint::Blueprint);
    println!("{}", serde_json::to_string_pretty(&s).unwrap());
}
