# Add one mount option to the /etc/fstab entries of one mount point; every other line,
# comment and option stays as it is. Exit status 3 when no entry has that mount point.
#
#   awk -v mountpoint=/ -v option=lazytime -f mount-option.awk /etc/fstab > fstab.new
#
# Used by install.sh to mount the probe's state directory with lazytime: without it,
# every durable write also rewrites the file's inode (its modification time), a 4 KB
# block per round on the SD card (docs/benchmarks.md, "A cheap probe").
BEGIN {
    if (mountpoint == "" || option == "") {
        print "usage: awk -v mountpoint=DIR -v option=OPT -f mount-option.awk FSTAB" > "/dev/stderr"
        exit 2
    }
    found = 0
}
/^[ \t]*#/ || NF < 4 || $2 != mountpoint { print; next }
{
    found = 1
    count = split($4, options, ",")
    for (i = 1; i <= count; i++) {
        if (options[i] == option) { print; next }
    }
    # Rewrite only the fourth field, keeping the line's own spacing.
    line = $0
    prefix = ""
    for (i = 1; i <= 3; i++) {
        match(line, /^[ \t]*[^ \t]+/)
        prefix = prefix substr(line, 1, RLENGTH)
        line = substr(line, RLENGTH + 1)
    }
    match(line, /^[ \t]*/)
    prefix = prefix substr(line, 1, RLENGTH)
    line = substr(line, RLENGTH + 1)
    match(line, /^[^ \t]+/)
    print prefix substr(line, 1, RLENGTH) "," option substr(line, RLENGTH + 1)
}
END { if (!found && mountpoint != "") exit 3 }
