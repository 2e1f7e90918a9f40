using System.CommandLine;
using System.Globalization;
using Forensics.Query.Bundles;
using Forensics.Query.Recording;

namespace Forensics.Cli;

/// <summary>
/// <c>forensics bundle REC -o FILE.fxb</c>: one verifiable file for a ticket (docs/bundles.md);
/// <c>forensics bundle FILE.fxb --append-note TEXT</c>: a custody note, chained and re-signed.
/// </summary>
public static class BundleCommand
{
    public static Command Build()
    {
        var input = new Argument<string>("recording") { Description = "a recording directory, or with --append-note a bundle file" };
        var output = Vocabulary.Output("the bundle file to write (conventionally NAME.fxb; created 0600)");
        var redact = new Option<string[]>("--redact-args") { Description = "regular expression over process arguments (exec.arguments); matches, or their capture groups, become *****; repeatable", AllowMultipleArgumentsPerToken = false };
        redact.Validators.Add(r =>
        {
            foreach (var t in r.Tokens)
            {
                try
                {
                    _ = new System.Text.RegularExpressions.Regex(t.Value, System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1));
                }
                catch (ArgumentException e)
                {
                    r.AddError($"--redact-args {t.Value}: {e.Message}");
                }
            }
        });
        var dropEnv = new Option<bool>("--drop-env") { Description = "blank the value of every VAR=value argument and null any env column" };
        var anon = new Option<bool>("--anonymize-ips") { Description = "prefix-preserving (Crypto-PAn) anonymization of every IP column with a random key that is not kept" };
        var exclude = new Option<string[]>("--exclude") { Description = "leave a table out (drop, exec, connect, ...); repeatable" };
        exclude.Validators.Add(r =>
        {
            foreach (var t in r.Tokens)
                if (!System.Text.RegularExpressions.Regex.IsMatch(t.Value, "^[a-z][a-z0-9_]{0,63}$"))
                    r.AddError($"--exclude: '{t.Value}' is not a table name");
        });
        var sign = Vocabulary.InputFile("--sign-key", "sign the bundle with this SSH key via ssh-keygen -Y sign -n forensics (private key, or .pub with the key in ssh-agent)");
        var note = new Option<string?>("--append-note") { Description = "add a note to an existing bundle's custody log" };
        note.Validators.Add(r =>
        {
            var v = r.Tokens[0].Value;
            if (string.IsNullOrWhiteSpace(v) || v.Length > 4096 || v.Any(char.IsControl))
                r.AddError("--append-note: a note is one line of text, at most 4096 characters");
        });
        var limits = new QueryCommands.LimitOptions();
        var cmd = new Command("bundle", "Pack a recording into one verifiable file for an incident ticket (.fxb: manifest, Parquet files, SHA-256 per file, root hash, custody log, optional SSH signature), with optional redaction; a recording that the readers or verify would refuse is not bundled")
        {
            input, output, redact, dropEnv, anon, exclude, sign, note,
        };
        limits.AddTo(cmd);
        cmd.SetAction(p => Run(new Args(
            p.GetValue(input)!, p.GetValue(output), p.GetValue(redact) ?? [], p.GetValue(dropEnv), p.GetValue(anon),
            p.GetValue(exclude) ?? [], p.GetValue(sign), p.GetValue(note), limits.Limits(p))));
        return cmd;
    }

    private sealed record Args(string Input, string? Output, string[] RedactArgs, bool DropEnv, bool AnonymizeIps,
        string[] Exclude, string? SignKey, string? Note, ReadLimits Limits);

    private static int Run(Args a)
    {
        BundleResult r;
        if (a.Note is not null)
        {
            if (a.Output is not null || a.RedactArgs.Length > 0 || a.DropEnv || a.AnonymizeIps || a.Exclude.Length > 0)
                throw new UsageException("--append-note takes only a bundle file and optionally --sign-key");
            if (!File.Exists(a.Input))
                throw new RecordingException($"{a.Input}: no such bundle file");
            r = BundleWriter.AppendNote(a.Input, a.Note, a.SignKey, new VerifyOptions { Limits = a.Limits });
            Console.WriteLine($"note added to {a.Input}: root {r.Root}{Signed(r)}");
            return (int)ExitCode.Ok;
        }
        if (a.Output is null)
            throw new UsageException("give the bundle file to write with -o FILE.fxb");
        if (!Directory.Exists(a.Input))
            throw new RecordingException($"{a.Input}: not a recording directory");
        r = BundleWriter.Create(a.Input, a.Output, new BundleOptions
        {
            RedactArgs = a.RedactArgs,
            DropEnv = a.DropEnv,
            AnonymizeIps = a.AnonymizeIps,
            Exclude = a.Exclude,
            SignKey = a.SignKey,
            Limits = a.Limits,
        });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"bundle {a.Output}: {r.Files} files, {r.Bytes} bytes, root {r.Root}{Signed(r)}"));
        return (int)ExitCode.Ok;
    }

    private static string Signed(BundleResult r) =>
        r.Signature is null ? ", unsigned" : $", signed by {r.Signature.KeyType} {r.Signature.Fingerprint}";
}
