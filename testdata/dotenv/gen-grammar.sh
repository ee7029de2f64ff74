#!/bin/sh
# Writes grammar.env: one line per grammar case of crates/envseal-dotenv (see README.md here).
# printf makes the bytes exact: CRLF endings, literal backslashes, no final newline.
# In each format string `\\` is one backslash in the file, `%%` one percent sign.
set -eu
cd "$(dirname "$0")"
{
printf '# envseal-dotenv grammar sample: every form the parser accepts (see README.md)\n'
printf '\n'
printf '   \t  \n'
printf '  # an indented comment\n'
printf 'PLAIN=value\n'
printf 'SPACED = spaced value  \n'
printf '   INDENTED=yes\n'
printf 'export EXPORTED=yes\n'
printf 'export\tTABBED = \tx\n'
printf 'export=not-a-prefix\n'
printf 'WITH_COMMENT=abc # trailing comment\n'
printf 'TAB_COMMENT=abc\t#tab comment\n'
printf 'HASH_INSIDE=abc#def\n'
printf 'HASH_FIRST=#not-a-comment\n'
printf 'ONLY_COMMENT= # empty value, then a comment\n'
printf 'EQUALS=a=b==\n'
printf 'URL=postgres://user:p%%40ss@db:5432/app?sslmode=require&x=1\n'
printf 'EMPTY=\n'
printf 'EMPTY_DQ=""\n'
printf "EMPTY_SQ=''\n"
printf "SQ='literal \\\\n \$HOME \${VAR} \"x\" # not a comment'\n"
printf 'DQ="tab\\tnl\\ncr\\rq\\"bs\\\\dollar\\$ unknown\\q ${VAR}" # comment\n'
printf "DQ_SINGLE=\"it's\"\n"
printf "SQ_DOUBLE='say \"hi\"'\n"
printf 'NO_EXPANSION=${HOME}/bin:$PATH\n'
printf 'UNICODE=héllo wörld ✓ 日本\n'
printf 'UNICODE_DQ="Grüße 🔑"\n'
printf 'dotted.key-name_1=ok\n'
printf '_UNDERSCORE=1\n'
printf 'SEALED=ENC[v1:str:AAECAwQFBgcICQoLDA0ODw]\n'
printf 'CRLF_PLAIN=crlf\r\n'
printf 'CRLF_DQ="crlf quoted" # crlf comment\r\n'
printf '# a CRLF comment\r\n'
printf '\r\n'
printf 'CRLF_MULTI="line one\r\nline two"\r\n'
printf 'MULTI_DQ="-----BEGIN FAKE KEY-----\nAAAA\nBBBB\n-----END FAKE KEY-----" # multi-line\n'
printf "MULTI_SQ='first\nsecond \\\\n stays'\n"
printf 'MULTI_ESCAPED="a\\nb"\n'
printf 'DUP=first\n'
printf 'DUP=second\n'
printf 'LAST=no final newline'
} > grammar.env
