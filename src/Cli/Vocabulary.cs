using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Forensics.Datapath.Probes;
using Forensics.Query.Recording;

namespace Forensics.Cli;

/// <summary>
/// The options every verb shares, declared once (docs/cli.md): the same name for the same
/// thing in every verb, and every value checked while parsing, so that a bad value is one
/// <c>error:</c> line with exit code 2 before anything is opened, created or attached.
/// </summary>
public static partial class Vocabulary
{
    /// <summary>A number of bytes as users type it (16M).</summary>
    public readonly record struct ByteSize(ulong Bytes)
    {
        public override string ToString() => Args.FormatSize(Bytes);
    }

    /// <summary>A duration as users type it (5m).</summary>
    public readonly record struct Span(TimeSpan Value)
    {
        public override string ToString() => Args.FormatDuration(Value);
    }

    /// <summary><c>-o, --output PATH</c>: where a verb writes (a folder for record, a file for the others).</summary>
    public static Option<string?> Output(string description, bool required = false) => new("--output", "-o")
    {
        Description = description,
        Required = required,
        CustomParser = r => NonEmpty(r, "--output"),
    };

    /// <summary><c>-f, --format NAME</c>: how a verb prints or writes, one of <paramref name="names"/>.</summary>
    public static Option<string> Format(string description, string defaultValue, params string[] names) => new("--format", "-f")
    {
        Description = description,
        DefaultValueFactory = _ => defaultValue,
        CustomParser = r => OneOf(r, "--format", names),
    };

    /// <summary><c>-t, --types KIND[,KIND]</c> (repeatable): event kinds.</summary>
    public static Option<string[]> Types(string description, IEnumerable<string> known) => new("--types", "-t")
    {
        Description = description,
        AllowMultipleArgumentsPerToken = true,
        CustomParser = r => ListOf(r, "--types", known.ToArray()),
    };

    /// <summary><c>--pod NAME</c>: a pod (name or namespace/name); repeatable where several make sense.</summary>
    public static Option<string[]> Pods(string description) => new("--pod")
    {
        Description = description,
        AllowMultipleArgumentsPerToken = true,
        CustomParser = r => ListOf(r, "--pod", null),
    };

    /// <summary><c>--pod NAME</c>, one pod.</summary>
    public static Option<string?> Pod(string description) => new("--pod")
    {
        Description = description,
        CustomParser = r => NonEmpty(r, "--pod"),
    };

    /// <summary><c>-n, --namespace NAME</c>.</summary>
    public static Option<string?> Namespace() => new("--namespace", "-n")
    {
        Description = "namespace",
        CustomParser = r => NonEmpty(r, "--namespace"),
    };

    /// <summary><c>--since TIME</c> / <c>--until TIME</c>: RFC 3339.</summary>
    public static Option<DateTimeOffset?> Time(string name, string description) => new(name)
    {
        Description = description,
        CustomParser = r =>
        {
            var s = r.Tokens[0].Value;
            if (DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t))
                return t;
            r.AddError($"{name}: '{s}' is not a time (use RFC 3339, e.g. 2026-11-23T10:00:00Z)");
            return null;
        },
    };

    /// <summary><c>-d, --duration D</c> and other durations: 500ms, 30s, 10m, 1h, 2d; at most 49 days.</summary>
    public static Option<TimeSpan?> Duration(string name, string? alias, string description)
    {
        var o = alias is null ? new Option<TimeSpan?>(name) : new Option<TimeSpan?>(name, alias);
        o.Description = description;
        o.CustomParser = r => ParseWith(r, name, Args.ParseDuration);
        return o;
    }

    /// <summary>A duration with a default (e.g. <c>--timeout</c>), shown in help as typed (5m).</summary>
    public static Option<Span> Duration(string name, string description, TimeSpan defaultValue) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => new Span(defaultValue),
        CustomParser = r => new Span(ParseWith(r, name, Args.ParseDuration)),
    };

    /// <summary><c>--flow-interval D</c>: a duration, or 0 (or off) for none (<see cref="TimeSpan.Zero"/>).</summary>
    public static Option<Span> FlowInterval() => new("--flow-interval")
    {
        Description = "The flows table (per-connection packets and bytes each way, from the datapath's and the kernel's conntrack): a row per active connection this often and one at its end; 0 records no flows table",
        DefaultValueFactory = _ => new Span(TimeSpan.FromSeconds(10)),
        CustomParser = r => r.Tokens[0].Value is "0" or "off" ? new Span(TimeSpan.Zero) : new Span(ParseWith(r, "--flow-interval", Args.ParseDuration)),
    };

    /// <summary>A size: 4096, 64K, 16M, 2G; shown in help as typed.</summary>
    public static Option<ByteSize> Size(string name, string description, ulong defaultValue, ulong min = 1, ulong max = ulong.MaxValue, bool powerOfTwo = false) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => new ByteSize(defaultValue),
        CustomParser = r =>
        {
            ulong v;
            try
            {
                v = Args.ParseSize(r.Tokens[0].Value);
            }
            catch (Exception e) when (e is FormatException or OverflowException)
            {
                r.AddError($"{name}: {e.Message}");
                return default;
            }
            if (v < min || v > max || (powerOfTwo && (v & (v - 1)) != 0))
                r.AddError($"{name}: {r.Tokens[0].Value} is not {(powerOfTwo ? "a power of two " : "")}between {Args.FormatSize(min)} and {Args.FormatSize(max)}");
            return new ByteSize(v);
        },
    };

    /// <summary>A whole number in [min, max].</summary>
    public static Option<long> Number(string name, string description, long defaultValue, long min, long max) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => defaultValue,
        CustomParser = r => NumberIn(r, name, min, max) ?? 0,
    };

    /// <summary>An optional whole number in [min, max].</summary>
    public static Option<long?> OptionalNumber(string name, string description, long min, long max) => new(name)
    {
        Description = description,
        CustomParser = r => NumberIn(r, name, min, max),
    };

    /// <summary>CIDRs (repeatable, comma lists): 10.0.0.0/8, fd00::/64, or an address.</summary>
    public static Option<string[]> Cidrs(string name, string description) => new(name)
    {
        Description = description,
        CustomParser = r =>
        {
            var list = Split(r);
            foreach (var c in list)
                if (!Datapath.Probes.Cidrs.TryParse(c, out _))
                    r.AddError($"{name}: '{c}' is not an IPv4 or IPv6 address or CIDR");
            return [.. list];
        },
    };

    /// <summary>An IP address.</summary>
    public static Option<string?> Address(string description) => new("--address")
    {
        Description = description,
        CustomParser = r =>
        {
            var s = r.Tokens[0].Value;
            if (!IPAddress.TryParse(s, out _) || s.Contains('%', StringComparison.Ordinal))
                r.AddError($"--address: '{s}' is not an IPv4 or IPv6 address");
            return s;
        },
    };

    /// <summary>One of a few words.</summary>
    public static Option<string> Choice(string name, string description, string defaultValue, params string[] names) => new(name)
    {
        Description = description,
        DefaultValueFactory = _ => defaultValue,
        CustomParser = r => OneOf(r, name, names),
    };

    /// <summary>A file that must exist and be a regular file (read by the verb).</summary>
    public static Option<string?> InputFile(string name, string description) => new(name)
    {
        Description = description,
        CustomParser = r =>
        {
            var s = NonEmpty(r, name);
            if (s is null)
                return null;
            if (InputFileProblem(s) is { } problem)
                r.AddError($"{name}: {s}: {problem}");
            return s;
        },
    };

    /// <summary>
    /// What is wrong with a file given to be read ("no such file", "is a directory", "is empty or not a
    /// regular file ..."), or null when it is a regular file with bytes in it. A link given by hand is
    /// followed: what it leads to is checked.
    /// </summary>
    public static string? InputFileProblem(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        FileSystemInfo? target;
        try
        {
            target = new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true);
        }
        catch (IOException)
        {
            return "a symbolic link that leads nowhere";
        }
        return RegularFile.Kind(target?.FullName ?? full) switch
        {
            null when target is not null => "a symbolic link that leads nowhere",
            null => "no such file",
            RegularFile.Regular => null,
            var kind => $"is {kind}",
        };
    }

    /// <summary>
    /// Recording arguments (folders or bundles). A word that looks like an option and is not a
    /// path is an unknown option, not a missing recording.
    /// </summary>
    public static Argument<string[]> Recordings(string description = "recording folders or bundle files (several: queried together, told apart by the recording and node columns)")
    {
        var a = new Argument<string[]>("recordings") { Description = description, Arity = ArgumentArity.OneOrMore };
        a.Validators.Add(r =>
        {
            foreach (var t in r.Tokens)
                if (LooksLikeOption(t.Value))
                    r.AddError($"unknown option '{t.Value}' (--help lists the options)");
        });
        return a;
    }

    internal static bool LooksLikeOption(string s) =>
        s.Length > 1 && s[0] == '-' && (char.IsAsciiLetter(s[1]) || s[1] == '-') && !Path.Exists(s);

    // ---- parsing helpers ------------------------------------------------------------------

    private static T? ParseWith<T>(ArgumentResult r, string name, Func<string, T> parse)
    {
        var s = r.Tokens[0].Value;
        try
        {
            return parse(s);
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
        {
            r.AddError($"{name}: {e.Message}");
            return default;
        }
    }

    private static long? NumberIn(ArgumentResult r, string name, long min, long max)
    {
        var s = r.Tokens[0].Value;
        if (!long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) || v < min || v > max)
        {
            r.AddError($"{name}: '{s}' is not a whole number from {min} to {max}");
            return null;
        }
        return v;
    }

    private static string? NonEmpty(ArgumentResult r, string name)
    {
        var s = r.Tokens[0].Value;
        if (string.IsNullOrWhiteSpace(s))
            r.AddError($"{name}: an empty value");
        return s;
    }

    private static string OneOf(ArgumentResult r, string name, string[] names)
    {
        var s = r.Tokens[0].Value;
        if (!names.Contains(s, StringComparer.OrdinalIgnoreCase))
            r.AddError($"{name}: '{s}' is not one of {string.Join(", ", names)}");
        return s.ToLowerInvariant();
    }

    private static string[] ListOf(ArgumentResult r, string name, string[]? known)
    {
        var list = Split(r);
        if (list.Count == 0)
            r.AddError($"{name}: an empty value");
        if (known is not null)
            foreach (var v in list)
                if (!known.Contains(v, StringComparer.OrdinalIgnoreCase))
                    r.AddError($"{name}: '{v}' is not one of {string.Join(", ", known)}");
        return [.. list];
    }

    private static List<string> Split(ArgumentResult r) =>
        r.Tokens.SelectMany(t => t.Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();

    // ---- System.CommandLine's own messages, as one line --------------------------------------

    /// <summary>One line for a parse error, naming the option and what was expected.</summary>
    public static string OneLine(ParseError error)
    {
        ArgumentNullException.ThrowIfNull(error);
        var m = error.Message;
        var typed = CannotParse().Match(m);
        if (typed.Success)
        {
            var what = typed.Groups[3].Value switch
            {
                "System.UInt32" or "System.Int32" or "System.Int64" or "System.UInt64" or "System.UInt16" => "a whole number",
                "System.Double" => "a number",
                "System.Boolean" => "true or false",
                _ => "a valid value",
            };
            return $"{typed.Groups[2].Value}: '{typed.Groups[1].Value}' is not {what}";
        }
        var notOne = NotRecognized().Match(m);
        if (notOne.Success)
            return $"'{notOne.Groups[1].Value}' is not one of {string.Join(", ", Regex.Matches(notOne.Groups[2].Value, "'([^']*)'").Select(x => x.Groups[1].Value))}";
        var unknown = Unrecognized().Match(m);
        if (unknown.Success)
            return LooksLikeOption(unknown.Groups[1].Value) || unknown.Groups[1].Value.StartsWith('-')
                ? $"unknown option '{unknown.Groups[1].Value}' (--help lists the options)"
                : $"unexpected argument '{unknown.Groups[1].Value}' (--help shows the usage)";
        if (m.StartsWith("Required command was not provided", StringComparison.Ordinal))
            return "no verb given (forensics --help lists them)";
        var required = RequiredArgument().Match(m);
        if (required.Success)
            return $"{required.Groups[2].Value}: {required.Groups[1].Value} missing (--help shows the usage)";
        var requiredOption = RequiredOption().Match(m);
        if (requiredOption.Success)
            return $"{requiredOption.Groups[1].Value} is required";
        return m.ReplaceLineEndings(" ").Replace('\t', ' ');
    }

    [GeneratedRegex(@"^Cannot parse argument '(.*)' for (?:option|command) '(.*)' as expected type '(.*)'\.$", RegexOptions.Singleline)]
    private static partial Regex CannotParse();

    [GeneratedRegex(@"^Argument '(.*?)' not recognized\. Must be one of:(.*)$", RegexOptions.Singleline)]
    private static partial Regex NotRecognized();

    [GeneratedRegex(@"^Unrecognized command or argument '(.*)'\.$", RegexOptions.Singleline)]
    private static partial Regex Unrecognized();

    [GeneratedRegex(@"^Required argument '(.*)' missing for command: '(.*)'\.$", RegexOptions.Singleline)]
    private static partial Regex RequiredArgument();

    [GeneratedRegex(@"^Option '(.*)' is required\.$", RegexOptions.Singleline)]
    private static partial Regex RequiredOption();
}
