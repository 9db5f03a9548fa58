# bash completion for bookwatch -- generated from the bookwatch CLI by `python -m devtools.completion --write`; do not edit by hand.
# Install: source this file, or copy it to
# ~/.local/share/bash-completion/completions/bookwatch

_bookwatch_reply() {
    mapfile -t COMPREPLY < <(compgen "$@" -- "$cur")
}

_bookwatch() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" command="" word i
    ((COMP_CWORD > 0)) && prev="${COMP_WORDS[COMP_CWORD - 1]}"
    # COMP_WORDBREAKS splits --option=value into '--option' '=' 'value'.
    if [[ $cur == "=" ]]; then
        cur=""
    elif [[ $prev == "=" ]] && ((COMP_CWORD > 1)); then
        prev="${COMP_WORDS[COMP_CWORD - 2]}"
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            -*) ;;
            *) command="$word"; break ;;
        esac
    done
    case "$command" in
        "")
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--debug --help --version -h"
            else
                _bookwatch_reply -W "bench init-demo install-triggers prune relay remove-triggers serve simulate status tail token"
            fi
            ;;
        bench)
            case "$prev" in
                --dsn|--duration|--events|--listeners|--payload-bytes|--rate|--writers) COMPREPLY=(); return ;;
                --mode) _bookwatch_reply -W "auto log notify wal"; return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--dsn --durable --duration --embedded --events --help --hub --json --listeners --mode --no-durable --no-relay --payload-bytes --rate --writers -h"
            else
                COMPREPLY=()
            fi
            ;;
        init-demo)
            case "$prev" in
                --channel|--dsn|--schema) COMPREPLY=(); return ;;
                --mode) _bookwatch_reply -W "auto log notify wal"; return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--channel --dsn --embedded --help --mode --reset --schema -h"
            else
                COMPREPLY=()
            fi
            ;;
        install-triggers)
            case "$prev" in
                --channel|--dsn|--exclude-column|--retention|--schema|--table|--tenant-column|-t) COMPREPLY=(); return ;;
                --mode) _bookwatch_reply -W "auto log notify wal"; return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--channel --dry-run --dsn --durable --embedded --exclude-column --help --mode --no-durable --retention --schema --table --tenant-column -h -t"
            else
                COMPREPLY=()
            fi
            ;;
        prune)
            case "$prev" in
                --dsn|--keep-last|--older-than) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--dry-run --dsn --embedded --help --keep-last --older-than -h"
            else
                COMPREPLY=()
            fi
            ;;
        relay)
            case "$prev" in
                --dsn) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--dsn --embedded --help -h"
            else
                COMPREPLY=()
            fi
            ;;
        remove-triggers)
            case "$prev" in
                --dsn|--schema|--table|-t) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--drop-log --dry-run --dsn --embedded --force --help --schema --table -h -t"
            else
                COMPREPLY=()
            fi
            ;;
        serve)
            case "$prev" in
                --allow-origin|--bus|--channel|--client-buffer|--dsn|--heartbeat|--host|--max-clients|--max-lag|--port|--schema|--token|--token-secret-file|--workers) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--allow-origin --bus --channel --client-buffer --demo --dsn --embedded --heartbeat --help --host --insecure --max-clients --max-lag --no-relay --port --schema --token --token-secret-file --workers -h"
            else
                COMPREPLY=()
            fi
            ;;
        simulate)
            case "$prev" in
                --bookings|--dsn|--random-seed|--rounds|--think-ms|--users) COMPREPLY=(); return ;;
                --scenario) _bookwatch_reply -W "seed storm"; return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--bookings --dsn --embedded --help --json --no-relay --random-seed --rounds --scenario --think-ms --users -h"
            else
                COMPREPLY=()
            fi
            ;;
        status)
            case "$prev" in
                --dsn) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--dsn --embedded --help --json -h"
            else
                COMPREPLY=()
            fi
            ;;
        tail)
            case "$prev" in
                --action|-a) _bookwatch_reply -W "DELETE INSERT TRUNCATE UPDATE"; return ;;
                --actor|--channel|--count|--dsn|--id|--since|--table|--timeout|-t) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--action --actor --channel --count --dsn --embedded --help --id --json --no-relay --since --table --timeout -a -h -t"
            else
                COMPREPLY=()
            fi
            ;;
        token)
            case "$prev" in
                --id|--sub|--table|--tenant|--token-secret-file|--ttl|-t) COMPREPLY=(); return ;;
            esac
            if [[ $cur == -* ]]; then
                _bookwatch_reply -W "--help --id --sub --table --tenant --token-secret-file --ttl -h -t"
            else
                COMPREPLY=()
            fi
            ;;
    esac
}

complete -F _bookwatch bookwatch
