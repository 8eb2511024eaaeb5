# Bash completion for aiopt: subcommands, their flags, technique and variant names, parameter
# names after --set, and the experiment files that ship with aiopt. Names come from the binary
# itself (`aiopt list --format json`, `aiopt SUBCOMMAND --help`), read once per shell.
#   source scripts/aiopt-completion.bash          (installed: share/bash-completion/completions/aiopt)

_aiopt_list_json() {
  if [[ -z "${_aiopt_list_cache:-}" ]]; then
    _aiopt_list_cache=$("$1" list --format json 2>/dev/null) || _aiopt_list_cache=""
  fi
  printf '%s' "$_aiopt_list_cache"
}

# Words from `aiopt list --format json` by a python3 one-liner: "techniques", or "variants T" /
# "params T" for technique T.
_aiopt_names() {
  local aiopt=$1 what=$2 technique=${3:-}
  _aiopt_list_json "$aiopt" | python3 -c '
import json, sys
what, technique = sys.argv[1], sys.argv[2]
try:
    techniques = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for t in techniques:
    if what == "techniques":
        print(t["name"])
    elif t["name"] == technique or not technique:
        for item in t[what]:
            print(item["name"] + ("=" if what == "params" else ""))
' "$what" "$technique" 2>/dev/null
}

_aiopt_flags() {
  "$1" "$2" --help 2>/dev/null | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u
}

_aiopt() {
  local cur prev aiopt=${COMP_WORDS[0]} sub="" technique="" i
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      list|info|bench|sweep|report|compare|generate|train) [[ -z $sub ]] && sub=${COMP_WORDS[i]} ;;
      --technique|-t) technique=${COMP_WORDS[i+1]} ;;
    esac
  done
  if [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "list info bench sweep report compare generate train --help --version" -- "$cur"))
    return
  fi
  case $prev in
    --technique|-t) COMPREPLY=($(compgen -W "$(_aiopt_names "$aiopt" techniques)" -- "$cur")); return ;;
    --variant) COMPREPLY=($(compgen -W "$(_aiopt_names "$aiopt" variants "$technique")" -- "$cur")); return ;;
    --set)
      compopt -o nospace 2>/dev/null
      COMPREPLY=($(compgen -W "$(_aiopt_names "$aiopt" params "$technique")" -- "$cur")); return ;;
    --format|-f) COMPREPLY=($(compgen -W "table md csv json jsonl gbench" -- "$cur")); return ;;
    --device) COMPREPLY=($(compgen -W "cpu cuda" -- "$cur")); return ;;
    --progress) COMPREPLY=($(compgen -W "auto always never" -- "$cur")); return ;;
    -o|--output|--resume|--out|--data|--save-state|--checkpoint) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_aiopt_flags "$aiopt" "$sub")" -- "$cur"))
  elif [[ $sub == sweep ]]; then
    local shipped
    shipped=$("$aiopt" sweep --help 2>/dev/null | grep -oE 'ships with aiopt: .*' | sed 's/.*: //; s/,/ /g')
    COMPREPLY=($(compgen -f -- "$cur") $(compgen -W "$shipped" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _aiopt aiopt
