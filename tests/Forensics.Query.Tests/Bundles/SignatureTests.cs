using System.Text;
using Forensics.Query.Bundles;

namespace Forensics.Query.Tests.Bundles;

/// <summary>SSHSIG signatures: made by the real ssh-keygen, checked by ours and by ssh-keygen -Y verify.</summary>
[Collection("bundles")]
public sealed class SignatureTests
{
    [Fact]
    public void Ed25519_Rfc8032TestVectors_VerifyAndRejectAlteredMessage()
    {
        // RFC 8032 section 7.1, tests 1 and 2.
        var pk1 = Convert.FromHexString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        var sig1 = Convert.FromHexString("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
        Assert.True(Ed25519.Verify(pk1, [], sig1));
        var pk2 = Convert.FromHexString("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
        var sig2 = Convert.FromHexString("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
        Assert.True(Ed25519.Verify(pk2, [0x72], sig2));
        Assert.False(Ed25519.Verify(pk2, [0x73], sig2));
        Assert.False(Ed25519.Verify(pk1, [0x72], sig2));
        sig2[10] ^= 1;
        Assert.False(Ed25519.Verify(pk2, [0x72], sig2));
    }

    [Theory]
    [InlineData("ed25519")]
    [InlineData("ecdsa")]
    [InlineData("rsa")]
    public void SignedBundle_VerifiedByUsAndBySshKeygen(string keyType)
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var key = s.SshKey("id_" + keyType, keyType);
        var file = s.PathOf("signed.fxb");
        var result = BundleWriter.Create(rec.Dir, file, new BundleOptions { SignKey = key });
        Assert.NotNull(result.Signature);

        var allowed = s.AllowedSigners("alice@example", key);
        var report = BundleReader.Verify(file, new VerifyOptions(AllowedSignersFile: allowed));
        Assert.Equal("alice@example", report.Signature!.TrustedAs);
        Assert.Equal(KeygenFingerprint(key), report.Signature.Fingerprint);
        Assert.Equal("alice@example", BundleReader.Verify(file, new VerifyOptions(PublicKeyFile: key + ".pub")).Signature!.TrustedAs);

        // ssh-keygen accepts the signature over index.json as it is stored in the bundle.
        var entries = RawTar.Split(File.ReadAllBytes(file));
        var index = entries.Single(e => e.Name == "index.json").Data;
        var sig = s.PathOf("index.sig");
        File.WriteAllBytes(sig, entries.Single(e => e.Name == "index.sig").Data);
        var (rc, stdout, err) = Scratch.Run("ssh-keygen", ["-Y", "verify", "-f", allowed, "-I", "alice@example", "-n", "forensics", "-s", sig], index);
        Assert.True(rc == 0, $"ssh-keygen -Y verify: {stdout} {err}");
        Assert.Contains("Good \"forensics\" signature", stdout + err, StringComparison.Ordinal);

        // ...and both reject a changed index.
        var altered = (byte[])index.Clone();
        altered[20] ^= 1;
        (rc, _, _) = Scratch.Run("ssh-keygen", ["-Y", "verify", "-f", allowed, "-I", "alice@example", "-n", "forensics", "-s", sig], altered);
        Assert.NotEqual(0, rc);
        Assert.False(SshSig.Parse(File.ReadAllBytes(sig)).Verify(altered));
    }

    [Fact]
    public void OurVerifier_SignatureMadeBySshKeygenOverArbitraryData_Verifies()
    {
        using var s = new Scratch();
        var key = s.SshKey("k");
        var msg = Encoding.UTF8.GetBytes("anything at all\n");
        var sig = SshSig.SignWithSshKeygen(msg, key);
        var parsed = SshSig.Parse(sig);
        Assert.Equal("ssh-ed25519", parsed.Key.Type);
        Assert.True(parsed.Verify(msg));
        Assert.False(parsed.Verify(Encoding.UTF8.GetBytes("anything at all!\n")));

        // Another namespace: ssh-keygen signs it, we refuse it for bundles.
        var (rc, other, _) = Scratch.Run("ssh-keygen", ["-Y", "sign", "-n", "file", "-f", key], msg);
        Assert.Equal(0, rc);
        Assert.False(SshSig.Parse(Encoding.ASCII.GetBytes(other)).Verify(msg));
    }

    [Fact]
    public void Verify_SignedByAnotherKey_IsUntrusted_AndUnsignedIsRefusedWhenKeyRequired()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var alice = s.SshKey("alice");
        var mallory = s.SshKey("mallory", comment: "mallory@example");
        var signed = s.PathOf("signed.fxb");
        BundleWriter.Create(rec.Dir, signed, new BundleOptions { SignKey = mallory });
        var allowed = s.AllowedSigners("alice@example", alice);
        var e = Assert.Throws<BundleException>(() => BundleReader.Verify(signed, new VerifyOptions(AllowedSignersFile: allowed)));
        Assert.Equal(BundleError.SignatureUntrusted, e.Error);
        Assert.Contains(KeygenFingerprint(mallory), e.Message, StringComparison.Ordinal);
        // Without trust anchors the signature is still checked, and reported untrusted.
        Assert.Null(BundleReader.Verify(signed).Signature!.TrustedAs);

        var unsigned = s.PathOf("unsigned.fxb");
        BundleWriter.Create(rec.Dir, unsigned, new BundleOptions());
        Assert.Equal(BundleError.Unsigned, Scratch.Fails(unsigned, new VerifyOptions(PublicKeyFile: alice + ".pub")));

        var (rc, _, err) = Scratch.Forensics("verify", signed, "--key", alice + ".pub");
        Assert.Equal((int)BundleError.SignatureUntrusted, rc);
        Assert.StartsWith("error: signed by another key", err, StringComparison.Ordinal);
    }

    [Fact]
    public void AppendNote_SignedBundle_NeedsKeyAndResigns()
    {
        using var rec = TestRecording.Standard();
        using var s = new Scratch();
        var key = s.SshKey("alice");
        var file = s.PathOf("signed.fxb");
        BundleWriter.Create(rec.Dir, file, new BundleOptions { SignKey = key });
        var before = File.ReadAllBytes(file);
        Assert.Throws<ArgumentException>(() => BundleWriter.AppendNote(file, "no key", null));
        Assert.Equal(before, File.ReadAllBytes(file));
        BundleWriter.AppendNote(file, "with key", key);
        var r = BundleReader.Verify(file, new VerifyOptions(PublicKeyFile: key + ".pub"));
        Assert.Equal("with key", r.Custody[^1].Note);
        Assert.NotNull(r.Signature!.TrustedAs);
    }

    private static string KeygenFingerprint(string key)
    {
        var (rc, stdout, _) = Scratch.Run("ssh-keygen", ["-l", "-f", key + ".pub"], null);
        Assert.Equal(0, rc);
        return stdout.Split(' ')[1];
    }
}
