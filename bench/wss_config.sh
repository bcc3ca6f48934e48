# Sourced by the bench scripts that run one lapps on ws:// and wss:// over loopback (tls.sh,
# soak.sh), from the repository's root.
#
# wss_config DIR WS_PORT WSS_PORT WORKERS: builds lapps and loadgen (release), makes a
# self-signed certificate for 127.0.0.1 in DIR and DIR/etc/ws.json: WORKERS IO workers, ws://
# on WS_PORT and wss:// on WSS_PORT. The caller writes DIR/etc/lapps.json.
wss_config() {
    local dir=$1 ws_port=$2 wss_port=$3 workers=$4
    cargo build -q --release --manifest-path bench/loadgen/Cargo.toml
    cargo build -q --release --bin lapps
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    mkdir -p "$dir/etc"
    cat >"$dir/etc/ws.json" <<JSON
{ "ip": "127.0.0.1", "port": $ws_port, "workers": { "workers": $workers },
  "endpoints": [ { "ip": "127.0.0.1", "port": $wss_port, "tls": true } ],
  "tls_certificates": { "cert": "$dir/cert.pem", "key": "$dir/key.pem" } }
JSON
}
