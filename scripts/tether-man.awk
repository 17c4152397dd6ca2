# tether-man.awk — generate tether's man pages from the headers' doc blocks.
#
#   awk -v outdir=DIR -v version=X.Y.Z -f scripts/tether-man.awk \
#       include/tether.h include/tether/base.h include/tether/core.h include/tether/scope.h ...
#
# POSIX awk (mawk, gawk, busybox). Writes DIR/<function>.3 for every
# documented function, static inline helper and macro, and DIR/tether.7, an
# overview listing them by header with each header's section texts. The
# build runs it (cmake/TetherMan.cmake), so the pages cannot drift from the
# header.
#
# A doc block is a comment that opens with "/*" on a line of its own and
# whose first line is "name — summary" (or "name, name — summary"); the
# declarations right after it (TETHER_API ...;, static inline ..., or
# #define) are what it documents. Its layout (see include/tether/base.h):
#
#   summary (up to the first blank line), description paragraphs, then the
#   labelled parts Parameters:, Returns:, Errors:, Blocking:, Thread safety:
#   and Ownership:, all six, in that order. In Parameters and Errors a line
#   indented by one space starts an item ("name  text"); deeper indentation
#   continues it.
#
# A block missing a part, or a TETHER_API declaration without a doc block, is
# an error: the script says where and exits 1, failing the build.

BEGIN {
    nlabels = split("Parameters|Returns|Errors|Blocking|Thread safety|Ownership", labels, "|")
    nb = 0          # doc blocks
    nh = 0          # headers, in the order given
    failed = 0
    if (outdir == "") outdir = "."
    if (version == "") version = "unknown"
}

function fail(msg) {
    printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
    failed = 1
}

# Escape text for roff: backslashes, the em dash, a leading control character.
function esc(s) {
    gsub(/\\/, "\\e", s)
    gsub(/—/, "\\(em", s)
    if (s ~ /^[.']/) s = "\\&" s
    return s
}

function trim(s) {
    sub(/^[ \t\n]+/, "", s)
    sub(/[ \t\n]+$/, "", s)
    return s
}

# The header's name as a user includes it: include/tether/core.h -> tether/core.h.
function incname(path,    n, parts) {
    n = split(path, parts, "/")
    if (n >= 2 && parts[n - 1] == "tether") return "tether/" parts[n]
    return parts[n]
}

FNR == 1 {
    nh++
    hfile[nh] = incname(FILENAME)
    hintro[nh] = ""
    nsect[nh] = 0
    incomment = 0
    pending = 0     # a doc block waits for its declarations
    indecl = 0      # inside a multi-line TETHER_API declaration
    firstblock = 1
}

# --- comment blocks ------------------------------------------------------------
incomment {
    line = $0
    closing = sub(/[ \t]*\*\/[ \t]*$/, "", line)
    if (closing && line ~ /^( \*?)?$/) {
        incomment = 0
        end_block()
        next
    }
    if (line ~ /^ \* /) line = substr(line, 4)
    else if (line ~ /^ \*$/) line = ""
    else sub(/^ \*/, "", line)
    nl++
    cl[nl] = line
    if (closing) {
        incomment = 0
        end_block()
    }
    next
}

# A block comment opening on a line of its own, or a section banner.
/^\/\*[ \t]*$/ || /^\/\* =+[ \t]*$/ {
    incomment = 1
    nl = 0
    if ($0 ~ /=/) { nl = 1; cl[1] = "=" }
    next
}

function end_block(    i, text, title) {
    if (nl == 0) return
    # Any comment ends the run of declarations after a doc block.
    if (pending && bdecl[nb] != "") pending = 0
    if (firstblock) {
        # The file's own comment: the header's introduction.
        firstblock = 0
        text = ""
        for (i = 1; i <= nl; i++) text = text cl[i] "\n"
        hintro[nh] = text
        return
    }
    if (cl[1] ~ /^=+$/) {
        # A section banner: title, then text, between two rules.
        title = cl[2]
        text = ""
        for (i = 4; i <= nl; i++) {
            if (cl[i] ~ /^=+$/) break
            text = text cl[i] "\n"
        }
        if (text ~ /^[ \n]*$/) return
        nsect[nh]++
        stitle[nh, nsect[nh]] = title
        stext[nh, nsect[nh]] = text
        return
    }
    if (cl[1] ~ /^[A-Za-z_][A-Za-z0-9_]*(, [A-Za-z_][A-Za-z0-9_]*)* — /) {
        if (pending) fail("doc block for " bnames[nb] " is followed by no declaration")
        nb++
        bfile[nb] = hfile[nh]
        bwhere[nb] = FILENAME ":" FNR
        bnames[nb] = cl[1]
        sub(/ — .*/, "", bnames[nb])
        gsub(/,/, "", bnames[nb])
        text = ""
        for (i = 1; i <= nl; i++) text = text cl[i] "\n"
        braw[nb] = text
        bdecl[nb] = ""
        pending = 1
        check_layout(nb)
    }
}

function check_layout(b,    n, ls, i, k, want, seen) {
    n = split(braw[b], ls, "\n")
    k = 1
    for (i = 1; i <= n; i++) {
        if (match(ls[i], /^[A-Z][a-z ]*:/)) {
            want = substr(ls[i], 1, RLENGTH - 1)
            if (k <= nlabels && want == labels[k]) k++
            else if (want == "Parameters" || want == "Returns" || want == "Errors" || \
                     want == "Blocking" || want == "Thread safety" || want == "Ownership")
                fail(bnames[b] ": \"" want ":\" out of order (expected \"" labels[k] ":\")")
        }
    }
    if (k <= nlabels) fail(bnames[b] ": doc block has no \"" labels[k] ":\" part")
}

# --- declarations ----------------------------------------------------------------
indecl {
    # Keep the header's line breaks; drop the indent "TETHER_API " added.
    d = $0
    sub(/^           /, "", d)
    bdecl[nb] = bdecl[nb] "\n" d
    if ($0 ~ /;/) { indecl = 0; bdecl[nb] = bdecl[nb] "\n" }
    next
}

/^TETHER_API / {
    if (!pending) { fail("TETHER_API declaration without a doc block: " $0); next }
    d = $0
    sub(/^TETHER_API /, "", d)
    bdecl[nb] = bdecl[nb] trim(d)
    if (d ~ /;/) bdecl[nb] = bdecl[nb] "\n"
    else indecl = 1
    next
}

/^static inline / {
    if (!pending) next
    d = $0
    sub(/[ \t]*\{?[ \t]*$/, "", d)
    bdecl[nb] = bdecl[nb] d ";\n"
    pending = 0
    next
}

/^#define / {
    if (!pending) next
    d = $0
    sub(/^#define /, "", d)
    sub(/[ \t]*\\$/, "", d)
    bdecl[nb] = bdecl[nb] "#define " d " ...\n"
    pending = 0
    next
}

# Anything else ends a run of declarations after a doc block.
/[^ \t]/ {
    if (pending && bdecl[nb] != "") pending = 0
}

# --- rendering -------------------------------------------------------------------

# Free text to roff: blank lines are paragraph breaks, "- " lines bullets,
# lines indented by two or more spaces verbatim.
function render_text(text, fh,    n, ls, i, s, verb) {
    n = split(text, ls, "\n")
    verb = 0
    para = 1
    for (i = 1; i <= n; i++) {
        s = ls[i]
        if (inbullet && s ~ /^   +[^ ]/) {
            print esc(trim(s)) > fh
            continue
        }
        if (s ~ /^  +[^ ]/) {
            if (!verb) { print ".PP\n.nf\n.RS 2" > fh; verb = 1 }
            print esc(s) > fh
            continue
        }
        if (verb) { print ".RE\n.fi" > fh; verb = 0; para = 1 }
        if (s ~ /^ *$/) { para = 1; inbullet = 0; continue }
        if (s ~ /^ ?- /) {
            sub(/^ ?- /, "", s)
            print ".IP \\(bu 2" > fh
            inbullet = 1
            para = 0
            print esc(s) > fh
            continue
        }
        if (inbullet) { inbullet = 0; para = 1 }
        if (para) { print ".PP" > fh; para = 0 }
        print esc(trim(s)) > fh
    }
    if (verb) print ".RE\n.fi" > fh
    inbullet = 0
}

# The parts of block b: summary, desc, and one entry per label.
function split_block(b,    n, ls, i, s, cur, lab) {
    n = split(braw[b], ls, "\n")
    part_summary = ""
    part_desc = ""
    for (lab = 1; lab <= nlabels; lab++) part[labels[lab]] = ""
    cur = "summary"
    for (i = 1; i <= n; i++) {
        s = ls[i]
        if (cur == "summary") {
            if (s == "") { cur = "desc"; continue }
            part_summary = part_summary " " s
            continue
        }
        if (match(s, /^[A-Z][a-z ]*:/) && (substr(s, 1, RLENGTH - 1) in part)) {
            cur = substr(s, 1, RLENGTH - 1)
            s = trim(substr(s, RLENGTH + 1))
            if (s != "") part[cur] = s "\n"
            continue
        }
        if (cur == "desc") part_desc = part_desc s "\n"
        else part[cur] = part[cur] s "\n"
    }
    sub(/^ [^—]*— /, "", part_summary)
}

# Items ("name  text" at one space of indent) of a Parameters or Errors part.
function render_items(text, fh, bold,    n, ls, i, s, tag, open) {
    n = split(text, ls, "\n")
    open = 0
    for (i = 1; i <= n; i++) {
        s = ls[i]
        if (s == "") continue
        if (s ~ /^ [^ ]/) {
            s = substr(s, 2)
            tag = s
            sub(/[ \t].*/, "", tag)
            s = trim(substr(s, length(tag) + 1))
            sub(/:$/, "", tag)
            print ".TP" > fh
            print (bold ? ".B " : ".I ") esc(tag) > fh
            if (s != "") print esc(s) > fh
            open = 1
        } else {
            if (!open) print ".PP" > fh
            print esc(trim(s)) > fh
        }
    }
}

function see_also(b, fh, self,    text, s, name, n, seen, out, i) {
    text = braw[b]
    n = 0
    while (match(text, /(tether_[a-z0-9_]+|TETHER_SCOPE_GUARD)(\([0-9]\))?|[a-z_0-9]+\([23]\)/)) {
        name = substr(text, RSTART, RLENGTH)
        text = substr(text, RSTART + RLENGTH)
        if (name ~ /\(/) {
            sect = name
            sub(/^[^(]*\(/, "", sect); sub(/\)$/, "", sect)
            sub(/\(.*/, "", name)
        } else sect = 3
        if (name ~ /^tether_|^TETHER_/ && !(name in fn)) continue
        if (name == self || (name in seen)) continue
        seen[name] = 1
        out[++n] = name " " sect
    }
    print ".SH SEE ALSO" > fh
    for (i = 1; i <= n; i++) {
        split(out[i], nv, " ")
        print ".BR " esc(nv[1]) " (" nv[2] ")," > fh
    }
    print ".BR tether (7)" > fh
}

function write_page(b, name,    fh, d, s, n, ds, i) {
    fh = outdir "/" name ".3"
    print ".\\\" Generated by scripts/tether-man.awk from " bfile[b] "; do not edit." > fh
    print ".TH " name " 3 \"\" \"tether " version "\" \"tether manual\"" > fh
    print ".nh" > fh
    print ".SH NAME" > fh
    d = bnames[b]
    gsub(/ /, ", ", d)
    s = trim(part_summary)
    sub(/\.$/, "", s)
    print esc(d) " \\- " esc(s) > fh
    print ".SH SYNOPSIS" > fh
    print ".nf" > fh
    print ".B #include <" bfile[b] ">" > fh
    print ".PP" > fh
    n = split(bdecl[b], ds, "\n")
    for (i = 1; i <= n; i++) if (ds[i] != "") print esc(ds[i]) > fh
    print ".fi" > fh
    print ".PP" > fh
    print "Compile and link with \\fIpkg\\-config \\-\\-cflags \\-\\-libs tether\\fP." > fh
    print ".SH DESCRIPTION" > fh
    print ".PP" > fh
    d = trim(part_summary)
    # "create a token." -> "Create a token."; names and calls stay as they are.
    if (d ~ /^[a-z]+ /) d = toupper(substr(d, 1, 1)) substr(d, 2)
    print esc(d) > fh
    render_text(part_desc, fh)
    if (trim(part["Parameters"]) !~ /^[Nn]one\.?$/) {
        print ".SS Parameters" > fh
        render_items(part["Parameters"], fh, 0)
    }
    print ".SH RETURN VALUE" > fh
    render_text(part["Returns"], fh)
    print ".SH ERRORS" > fh
    render_items(part["Errors"], fh, 1)
    print ".SH BLOCKING" > fh
    render_text(part["Blocking"], fh)
    print ".SH THREAD SAFETY" > fh
    render_text(part["Thread safety"], fh)
    print ".SH OWNERSHIP" > fh
    render_text(part["Ownership"], fh)
    see_also(b, fh, name)
    close(fh)
}

function write_overview(    fh, h, b, k, n, names, i, sum) {
    fh = outdir "/tether.7"
    print ".\\\" Generated by scripts/tether-man.awk from the tether headers; do not edit." > fh
    print ".TH tether 7 \"\" \"tether " version "\" \"tether manual\"" > fh
    print ".nh" > fh
    print ".SH NAME" > fh
    print "tether \\- structured concurrency and cancellation for POSIX threads and blocking I/O" > fh
    print ".SH SYNOPSIS" > fh
    print ".nf" > fh
    print ".B #include <tether.h>" > fh
    print ".fi" > fh
    print ".SH DESCRIPTION" > fh
    for (h = 1; h <= nh; h++) if (hfile[h] == "tether.h") render_text(hintro[h], fh)
    for (h = 1; h <= nh; h++) {
        if (hfile[h] == "tether.h") continue
        print ".SH \"<" hfile[h] ">\"" > fh
        render_text(hintro[h], fh)
        for (k = 1; k <= nsect[h]; k++) {
            print ".SS \"" esc(stitle[h, k]) "\"" > fh
            render_text(stext[h, k], fh)
        }
        print ".SS Functions" > fh
        for (b = 1; b <= nb; b++) {
            if (bfile[b] != hfile[h]) continue
            n = split(bnames[b], names, " ")
            split_block(b)
            sum = esc(trim(part_summary))
            for (i = 1; i <= n; i++) {
                print ".TP" > fh
                print ".BR " esc(names[i]) " (3)" > fh
                print sum > fh
            }
        }
    }
    print ".SH SEE ALSO" > fh
    print ".BR pthreads (7)," > fh
    print ".BR signal (7)" > fh
    close(fh)
}

END {
    if (incomment) fail("unterminated comment")
    if (pending && bdecl[nb] == "") fail("doc block for " bnames[nb] " is followed by no declaration")
    for (b = 1; b <= nb; b++) {
        n = split(bnames[b], names, " ")
        for (i = 1; i <= n; i++) fn[names[i]] = b
        if (bdecl[b] == "") { printf "%s: %s documents no declaration\n", bwhere[b], bnames[b] > "/dev/stderr"; failed = 1 }
    }
    if (failed) exit 1
    for (b = 1; b <= nb; b++) {
        split_block(b)
        n = split(bnames[b], names, " ")
        for (i = 1; i <= n; i++) write_page(b, names[i])
    }
    write_overview()
}
