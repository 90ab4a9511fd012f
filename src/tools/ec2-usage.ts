/** What in a region can launch an AMI: instances, launch templates, launch configurations, SSM parameters. */
import { awsRetry, catching, type Ec2Connection } from "./ec2-client.js";

/** The usage verbs (part of Ec2Tool). */
export interface UsageVerbs {
  /**
   * Image ids something in the region can launch, each with what uses it: instances (not
   * terminated), every launch template version (a `resolve:ssm:` image id resolved), launch
   * configurations (Auto Scaling), and SSM parameters of data type aws:ec2:image.
   */
  imagesInUse(region: string): Promise<Map<string, string>>;
}

export function usageVerbs({ client, load, translate }: Ec2Connection): UsageVerbs {
  return {
    async imagesInUse(region) {
      const { sdk, ec2 } = await client(region);
      const used = new Map<string, string>();
      const use = (imageId: string | undefined, by: string) => {
        if (imageId && !used.has(imageId)) used.set(imageId, by);
      };
      const instances = sdk.paginateDescribeInstances(
        { client: ec2 },
        {
          Filters: [
            { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] },
          ],
        },
      );
      for await (const page of catching(instances, translate)) {
        for (const r of page.Reservations ?? [])
          for (const i of r.Instances ?? []) use(i.ImageId, `instance ${i.InstanceId}`);
      }
      const ssmNames = new Map<string, string>();
      for await (const page of catching(sdk.paginateDescribeLaunchTemplates({ client: ec2 }, {}), translate)) {
        for (const t of page.LaunchTemplates ?? []) {
          const versions = sdk.paginateDescribeLaunchTemplateVersions(
            { client: ec2 },
            { LaunchTemplateId: t.LaunchTemplateId },
          );
          for await (const vp of catching(versions, translate)) {
            for (const v of vp.LaunchTemplateVersions ?? []) {
              const imageId = v.LaunchTemplateData?.ImageId;
              const by = `launch template ${t.LaunchTemplateName ?? t.LaunchTemplateId} version ${v.VersionNumber}`;
              const ssm = imageId ? /^resolve:ssm:(.+)$/.exec(imageId) : null;
              if (ssm) ssmNames.set(ssm[1], by);
              else use(imageId, by);
            }
          }
        }
      }
      const autoscaling = load<typeof import("@aws-sdk/client-auto-scaling")>("@aws-sdk/client-auto-scaling");
      const asg = new autoscaling.AutoScalingClient({ region, ...awsRetry() });
      for await (const page of catching(
        autoscaling.paginateDescribeLaunchConfigurations({ client: asg }, {}),
        translate,
      )) {
        for (const c of page.LaunchConfigurations ?? [])
          use(c.ImageId, `launch configuration ${c.LaunchConfigurationName}`);
      }
      const ssmSdk = load<typeof import("@aws-sdk/client-ssm")>("@aws-sdk/client-ssm");
      const ssm = new ssmSdk.SSMClient({ region, ...awsRetry() });
      // Filtered here rather than by a DataType filter, which some SSM-compatible endpoints refuse.
      for await (const page of catching(
        ssmSdk.paginateDescribeParameters({ client: ssm }, { MaxResults: 50 }),
        translate,
      )) {
        for (const p of page.Parameters ?? [])
          if (p.Name && p.DataType === "aws:ec2:image" && !ssmNames.has(p.Name))
            ssmNames.set(p.Name, `SSM parameter ${p.Name}`);
      }
      for (const [name, by] of ssmNames) {
        // A launch template's reference may carry a version or label: name:3, name:prod.
        const answer = await ssm
          .send(new ssmSdk.GetParameterCommand({ Name: name }))
          .catch((e: { name?: string }) => (e?.name === "ParameterNotFound" ? undefined : translate(e)));
        use(answer?.Parameter?.Value, by.startsWith("SSM") ? by : `${by} (resolve:ssm:${name})`);
      }
      return used;
    },
  };
}
