using System.Diagnostics;
using System.Text;
using Forensics.Datapath;
using Forensics.Datapath.Probes;
using Forensics.Query.Bundles;
using Forensics.Recorder;
using Forensics.Recorder.Tables;
using Forensics.Tests;

namespace Forensics.Kernel.Tests;

/// <summary>Secrets planted in process arguments and environment-style arguments during a real recording never reach a redacted bundle.</summary>
public class RedactionRecordingTests
{
    [KernelFact]
    public void BundleWithRedaction_SecretsPlantedDuringRecording_FoundNowhereInTheBundle()
    {
        Prerequisites.EnsureKernelAccess();
        var work = Directory.CreateTempSubdirectory("fx-redact-").FullName;
        try
        {
            var dir = Path.Combine(work, "rec");
            var password = "hunter2-" + Guid.NewGuid().ToString("N")[..10];
            var apiKey = "AKIA" + Guid.NewGuid().ToString("N")[..16].ToUpperInvariant();
            var (mono, boot) = Recording.ClockOffsets();
            using (var probes = TracingProbes.Load(new ProbeOptions { Events = new EventOptions { SelfPid = (uint)Environment.ProcessId }, Enabled = ProbeSet.Exec | ProbeSet.Exit }))
            {
                probes.Attach();
                using var cts = new CancellationTokenSource();
                using var rec = new Recording([probes], new EventContext(mono) { BoottimeToUtcOffsetNs = boot },
                    new RecordOptions { OutputDir = dir, SealInterval = TimeSpan.FromMilliseconds(500) });
                var t = new Thread(() => rec.Run(() => "duration", cts.Token));
                t.Start();
                Assert.True(rec.WaitStarted(TimeSpan.FromSeconds(30)));
                // a password on the command line, and an API key handed through env(1) as VAR=value
                using (var p = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "true", "--password=" + password]))!)
                    p.WaitForExit();
                using (var p = Process.Start(new ProcessStartInfo("/usr/bin/env", ["API_KEY=" + apiKey, "/bin/true"]))!)
                    p.WaitForExit();
                Assert.True(rec.WaitCaughtUp(TimeSpan.FromSeconds(30)));
                cts.Cancel();
                t.Join(TimeSpan.FromSeconds(30));
            }

            // the control: the recording itself holds both secrets (the search can find them)
            var args = Duck.Table(dir, "exec").Select(r => (string?)r["arguments"] ?? "").ToList();
            Assert.Contains(args, a => a.Contains(password, StringComparison.Ordinal));
            Assert.Contains(args, a => a.Contains(apiKey, StringComparison.Ordinal));

            var bundle = Path.Combine(work, "incident.fxb");
            BundleWriter.Create(dir, bundle, new BundleOptions { RedactArgs = [@"--password=(\S+)"], DropEnv = true });

            var bytes = File.ReadAllBytes(bundle);
            Assert.Equal(-1, bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(password)));
            Assert.Equal(-1, bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(apiKey)));
            // Parquet pages are compressed: read every value back through the bundle, too
            using (BundleReader.OpenRecording(bundle, out var extracted))
            {
                foreach (var table in Directory.EnumerateDirectories(extracted).Select(Path.GetFileName))
                {
                    foreach (var row in Duck.Table(extracted, table!))
                    {
                        foreach (var v in row.Values.OfType<string>())
                        {
                            Assert.DoesNotContain(password, v, StringComparison.Ordinal);
                            Assert.DoesNotContain(apiKey, v, StringComparison.Ordinal);
                        }
                    }
                }
                var redacted = Duck.Table(extracted, "exec").Select(r => (string?)r["arguments"] ?? "").ToList();
                Assert.Contains(redacted, a => a.Contains("--password=*****", StringComparison.Ordinal));
                Assert.Contains(redacted, a => a.Contains("API_KEY=*****", StringComparison.Ordinal));
            }
        }
        finally
        {
            Directory.Delete(work, true);
        }
    }
}
