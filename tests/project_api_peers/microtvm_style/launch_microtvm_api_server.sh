#!/bin/sh
# As microTVM's launch scripts: the server script, then --read-fd R --write-fd W, and nothing more.
if [ "$#" -lt 5 ]; then
    echo "usage: $0 SERVER --read-fd R --write-fd W" >&2
    exit 2
fi
exec python3 "$1" "$2" "$3" "$4" "$5"
