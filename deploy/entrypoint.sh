#!/bin/sh
# The image's roles: the first argument chooses what this container runs; the rest is passed on.
# Each role replaces this shell (exec), so signals reach the service itself.
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift

case "$role" in
  api) exec python -m app serve "$@" ;;
  consume-stream) exec python -m app consume-stream "$@" ;;
  migrate) exec python -m app migrate "$@" ;;
  rebuild-profiles) exec python -m app rebuild-profiles "$@" ;;
  train) exec python -m training train "$@" ;;
  retrain) exec python -m training retrain "$@" ;;
  app) exec python -m app "$@" ;;
  training) exec python -m training "$@" ;;
  -h | --help | help)
    echo "roles: api, consume-stream, migrate, rebuild-profiles, train, retrain;"
    echo "       app ARGS... (python -m app), training ARGS... (python -m training), or a command"
    ;;
  *) exec "$role" "$@" ;;
esac
